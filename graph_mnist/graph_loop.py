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
    steps: tf.Tensor     # placeholder: how many steps this run takes, ...
    first: tf.Tensor     # ... from this step on
    orders: tf.Tensor    # placeholder [epochs, steps per epoch, batch]: the batches of the
                         # epochs those steps fall in (data.Batches.orders)
    cross_entropy: tf.Tensor  # the last step's
    next_step: tf.Tensor      # first + steps


def build(spec, cross_entropy, optimizer, rate, pkeep):
    """The loop in the graph, in the graph being built, after the talk's training step:
    cross_entropy(Ylogits, Y_) is the run's loss; optimizer and rate (a Rate) are the
    ones the talk's step was made with.

    The training set is held twice: as loaded, and in the shuffled order of the epoch
    being trained (arranged by one gather when a step starts a new epoch), so that a
    step's batch is one contiguous slice of it, not a gather of 100 rows."""
    images = v1.placeholder(tf.float32, [None, 28, 28, 1], name='training_images')
    labels = v1.placeholder(tf.float32, [None, 10], name='training_labels')
    slots = {v.name for v in optimizer.variables()}
    network_variables = [v for v in v1.global_variables() if v.name not in slots]
    local = [v1.GraphKeys.LOCAL_VARIABLES]  # not saved: the data, not the run's state
    data_X = v1.Variable(images, trainable=False, collections=local, name='data_X')
    data_Y = v1.Variable(labels, trainable=False, collections=local, name='data_Y')
    epoch_X = v1.Variable(images, trainable=False, collections=local, name='epoch_X')
    epoch_Y = v1.Variable(labels, trainable=False, collections=local, name='epoch_Y')
    arranged = v1.Variable(-1, trainable=False, collections=local, name='arranged_epoch')
    orders = v1.placeholder(tf.int32, [None, None, None], name='orders')
    steps = v1.placeholder(tf.int32, [], name='steps')
    first = v1.placeholder(tf.int32, [], name='first_step')
    steps_per_epoch, batch = tf.shape(orders)[1], tf.shape(orders)[2]
    trained = [v for v in network_variables if v.trainable]
    same = iter(())

    def the_same_variables(next_creator, **kwargs):  # in the order build made them
        return next(same)

    def batch_of(s):
        """Step s's batch: a slice of the epoch's arrangement, made when s needs it."""
        epoch = s // steps_per_epoch

        def arrange():
            rows = tf.reshape(orders[epoch - first // steps_per_epoch], [-1])
            with tf.control_dependencies([
                    epoch_X.assign(tf.gather(data_X.read_value(), rows)),
                    epoch_Y.assign(tf.gather(data_Y.read_value(), rows)),
                    arranged.assign(epoch)]):
                return tf.identity(epoch)

        ready = tf.cond(tf.equal(arranged.read_value(), epoch), lambda: epoch, arrange)
        with tf.control_dependencies([ready]):
            start = s % steps_per_epoch * batch
            return (tf.slice(epoch_X.read_value(), [start, 0, 0, 0], [batch, -1, -1, -1]),
                    tf.slice(epoch_Y.read_value(), [start, 0], [batch, -1]))

    def step(i, _):
        nonlocal same
        batch_X, batch_Y = batch_of(first + i)
        same = iter(network_variables)
        with tf.variable_creator_scope(the_same_variables):
            updates = len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
            Ylogits = spec.logits(batch_X, pkeep, False, first + i)
            moved = v1.get_collection(v1.GraphKeys.UPDATE_OPS)[updates:]
        xent = cross_entropy(Ylogits, batch_Y)
        rate.now = spec.learning_rate(first + i)
        with tf.control_dependencies(moved):
            update = optimizer.apply_gradients(zip(tf.gradients(xent, trained), trained))
        with tf.control_dependencies([update]):
            return i + 1, tf.identity(xent)

    # batch norm's averages make their variables outside the loop's graph (init_scope):
    # the same hand-over there
    with tf.variable_creator_scope(the_same_variables):
        done, last = v1.while_loop(lambda i, _: i < steps, step,
                                   [tf.constant(0), tf.constant(0.0)], name='training_loop')
    return Loop([v.initializer for v in (data_X, data_Y, epoch_X, epoch_Y, arranged)],
                images, labels, steps, first, orders, last, first + done)
