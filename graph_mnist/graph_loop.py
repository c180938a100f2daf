"""The training loop moved into the graph (--steps_per_run): the talk's loop, with its
Python `for` replaced by a `tf.while_loop`, so that one Session.run takes many steps.

The training set is held in the graph once; each step takes its batch's rows by index
(the same images data.Batches hands the talk's loop) and is the talk's training step
written once more inside the loop, on the same variables: the same network, the same
cross-entropy, the learning rate of its own step, the same optimizer and Adam slots,
batch norm's averages moved by the step. graph_mnist.training_graph builds it beside the
talk's step; graph_mnist.training runs it with another fetch.
"""

from typing import NamedTuple

import tensorflow as tf

v1 = tf.compat.v1


class Rate:
    """The learning rate an optimizer reads when it applies gradients: `lr` (the talk's
    step, fed), or inside the loop in the graph the rate of the step being built."""

    def __init__(self, lr):
        self.now = lr

    def __call__(self):
        return self.now


class Loop(NamedTuple):
    """What a Session feeds and runs for the loop in the graph."""
    load: list           # run once, fed `images` and `labels`: the training set in
    images: tf.Tensor    # placeholder: the training images
    labels: tf.Tensor    # placeholder: their one-hot labels
    indices: tf.Tensor   # placeholder [steps, batch]: each step's images, by index
    first: tf.Tensor     # placeholder: the step number of the first of them
    cross_entropy: tf.Tensor  # the last step's
    next_step: tf.Tensor      # first + steps


def build(spec, cross_entropy, optimizer, rate, pkeep):
    """The loop in the graph, in the graph being built, after the talk's training step:
    cross_entropy(Ylogits, Y_) is the run's loss; optimizer and rate (a Rate) are the
    ones the talk's step was made with."""
    images = v1.placeholder(tf.float32, [None, 28, 28, 1], name='training_images')
    labels = v1.placeholder(tf.float32, [None, 10], name='training_labels')
    slots = {v.name for v in optimizer.variables()}
    network_variables = [v for v in v1.global_variables() if v.name not in slots]
    local = [v1.GraphKeys.LOCAL_VARIABLES]  # not saved: the data, not the run's state
    data_X = v1.Variable(images, trainable=False, collections=local, name='data_X')
    data_Y = v1.Variable(labels, trainable=False, collections=local, name='data_Y')
    indices = v1.placeholder(tf.int32, [None, None], name='indices')  # [steps, batch]
    first = v1.placeholder(tf.int32, [], name='first_step')
    trained = [v for v in network_variables if v.trainable]
    same = iter(())

    def the_same_variables(next_creator, **kwargs):  # in the order build made them
        return next(same)

    # read once, outside the loop: a gather from the variable itself (ResourceGather)
    # cost half a softmax step; from its value, a plain copy of the batch's rows
    all_X, all_Y = data_X.read_value(), data_Y.read_value()

    def step(i, _):
        nonlocal same
        same = iter(network_variables)
        with tf.variable_creator_scope(the_same_variables):
            updates = len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
            Ylogits = spec.logits(tf.gather(all_X, indices[i]), pkeep, False, first + i)
            moved = v1.get_collection(v1.GraphKeys.UPDATE_OPS)[updates:]
        xent = cross_entropy(Ylogits, tf.gather(all_Y, indices[i]))
        rate.now = spec.learning_rate(first + i)
        with tf.control_dependencies(moved):
            update = optimizer.apply_gradients(zip(tf.gradients(xent, trained), trained))
        with tf.control_dependencies([update]):
            return i + 1, tf.identity(xent)

    # batch norm's averages make their variables outside the loop's graph (init_scope):
    # the same hand-over there
    with tf.variable_creator_scope(the_same_variables):
        steps, last = v1.while_loop(lambda i, _: i < tf.shape(indices)[0], step,
                                    [tf.constant(0), tf.constant(0.0)], name='training_loop')
    return Loop([data_X.initializer, data_Y.initializer], images, labels, indices, first,
                last, first + steps)
