"""The graph around a network, written as the talk's lines: placeholders for what is fed,
the model, the cross-entropy, the accuracy, and the training step the optimizer makes
by minimising the cross-entropy. `build` puts one network (graph_mnist.models) and its
training step into a new `tf.Graph` and hands back the tensors a Session runs.

Nothing here computes anything: a Session (graph_mnist.training) runs what is built.
Nothing here switches TensorFlow modes: every graph is its own `tf.Graph()`.
"""

import contextlib
from typing import NamedTuple

import tensorflow as tf

from graph_mnist import graph_loop
from graph_mnist import talk

v1 = tf.compat.v1

LOSSES = ('stable', 'literal')
LOSS_SCALE = 100  # the cross-entropy is the batch mean times this: the sum over 100 images


class Graph(NamedTuple):
    """One network's graph and the tensors a training loop feeds and runs."""
    graph: tf.Graph
    X: tf.Tensor              # placeholder: images [batch, 28, 28, 1]
    Y_: tf.Tensor             # placeholder: correct answers, one-hot [batch, 10]
    step: tf.Tensor           # placeholder: the training step, for the learning-rate decay
    pkeep: tf.Tensor          # placeholder: probability of keeping a neuron (dropout), fed
                              # 1.0 to evaluate; used by the dropout networks only
    tst: tf.Tensor            # placeholder (default False): testing? Batch norm networks
                              # only (None for the talk's eight): True uses the averages
    Ylogits: tf.Tensor
    Y: tf.Tensor              # the ten probabilities
    prediction: tf.Tensor     # the recognised digit, argmax of Y
    cross_entropy: tf.Tensor  # summed over a batch of 100, as the talk's code scaled it
    accuracy: tf.Tensor
    lr: tf.Tensor
    train_step: tf.Operation
    next_step: tf.Tensor      # the step after a training step: step + 1, or on a cluster
                              # the global step every worker adds to, read after it
    init: tf.Operation
    saver: object             # tf.compat.v1.train.Saver of every variable (Adam's slots,
                              # batch norm's moving averages too)
    spec: talk.Spec
    config: object            # the tf.compat.v1.ConfigProto a Session of this graph needs
    minimize_ops: range       # graph.get_operations()[minimize_ops]: what minimize added
    global_step: tf.Variable = None  # on a cluster: the step all workers add to
    loop: graph_loop.Loop = None     # build(loop=True): the training loop in the graph

    @property
    def weights(self):
        """The W variables, for the dashboard's spread and TensorBoard."""
        return self._named('W')

    @property
    def biases(self):
        """The B variables (batch norm's offsets)."""
        return self._named('B')

    def _named(self, letter):
        with self.graph.as_default():
            return [v for v in v1.trainable_variables() if v.op.name.startswith(letter)]

    @property
    def parameters(self):
        """Number of values the optimizer adjusts, e.g. 7,850 for softmax."""
        with self.graph.as_default():
            return sum(v.shape.num_elements() for v in v1.trainable_variables())

    def test_feed(self, images, labels=None):
        """The feed that evaluates: all neurons on, batch norm on its moving averages."""
        feed = {self.X: images, self.pkeep: 1.0}
        if labels is not None:
            feed[self.Y_] = labels
        if self.tst is not None:
            feed[self.tst] = True
        return feed


def cross_entropy(Ylogits, Y_, loss='stable'):
    """The talk's error function, -sum(Y_ * log(Y)), written by hand.

    'literal' is the talk's line exactly: log of the softmax output, which is -inf
    once a probability underflows to 0, and 0 * -inf = NaN. 'stable' is the same formula
    with log(softmax) computed as log_softmax (logits minus their log-sum-exp), which
    never takes the log of 0. Mean over the batch times 100: the sum over a batch of
    100, the scale of the talk's code, so its learning rates apply unchanged.
    """
    if loss == 'literal':
        Y = tf.nn.softmax(Ylogits)
        per_image = -tf.reduce_sum(Y_ * tf.math.log(Y), axis=1)
    elif loss == 'stable':
        per_image = -tf.reduce_sum(Y_ * tf.nn.log_softmax(Ylogits), axis=1)
    else:
        raise ValueError(f'loss must be one of {LOSSES}, got {loss!r}')
    return tf.reduce_mean(per_image) * LOSS_SCALE


PRECISIONS = ('float32', 'bfloat16', 'float16')  # bfloat16: CPU (oneDNN); float16: GPU


def gpu_present():
    """Whether TensorFlow sees a GPU (where --precision=float16 is rewritten to run)."""
    return bool(tf.config.list_physical_devices('GPU'))


def bfloat16_support(cpuinfo='/proc/cpuinfo'):
    """Whether this CPU computes in bfloat16 itself (AVX-512 BF16 or AMX), as oneDNN's
    bfloat16 kernels need; elsewhere they would be emulated, slower than float32."""
    try:
        with open(cpuinfo, encoding='utf-8') as f:
            flags = {flag for line in f if line.startswith('flags') for flag in line.split()}
    except OSError:
        return False
    return bool(flags & {'avx512_bf16', 'amx_bf16'})


def session_config(loss, precision='float32'):
    """Session settings for a loss and a precision.

    'literal' must stay literal: TensorFlow's graph optimizer (Grappler) rewrites
    Log(Softmax(x)) into LogSoftmax(x) wherever it can, which would quietly make the
    talk's literal line stable, or not, depending on what else is fetched. For
    --loss=literal that rewrite is switched off.

    'bfloat16': the same float32 graph, rewritten by Grappler before it runs so that its
    matmuls and convolutions compute in bfloat16 on oneDNN (the variables, the loss and
    the optimizer's updates stay float32): deferred execution lets TensorFlow change how
    the talk's lines compute without changing them. 'float16': the same on a GPU, by
    Grappler's CUDA pass (float16 needs its loss scaled: see build).
    """
    config = v1.ConfigProto()
    rewrites = config.graph_options.rewrite_options
    if loss == 'literal':
        rewrites.arithmetic_optimization = rewrites.OFF
    if precision == 'bfloat16':
        rewrites.auto_mixed_precision_onednn_bfloat16 = rewrites.ON
    if precision == 'float16':  # Grappler's GPU pass: matmuls and convolutions in float16
        rewrites.auto_mixed_precision = rewrites.ON
    return config


def build(model, loss='stable', seed=0, loop=False, cluster=None, precision='float32'):
    """Builds a network, its cross-entropy, accuracy and training step in a new
    tf.Graph, finalized: from then on a Session only runs it.

    model: the network's name, or a run's Spec with the talk's experiments applied
    (talk.with_changes, made once in training.Config).
    loop: also the training loop moved into the graph (graph_loop: many training steps
    in one Session.run). cluster: None on one machine; on a cluster,
    graph_mnist.distributed's Placement: where the variables go (`device`), and
    `optimizer(optimizer)`, which may wrap it (synchronous replicas). There a global
    step counts every worker's steps, and the graph is left open for the cluster's own
    operations (its MonitoredSession's Scaffold finalizes it)."""
    spec = talk.spec_of(model)
    graph = tf.Graph()
    placed = graph.device(cluster.device) if cluster else contextlib.nullcontext()
    with graph.as_default(), placed:
        v1.set_random_seed(seed)  # graph-level seed: same seed, same initial weights
        # placeholders for what is fed: the images, their correct answers, the step (for
        # the learning rate's decay), the probability of keeping a neuron (dropout)
        X = v1.placeholder(tf.float32, [None, 28, 28, 1], name='X')
        Y_ = v1.placeholder(tf.float32, [None, 10], name='Y_')
        step = v1.placeholder(tf.int32, name='step')
        pkeep = v1.placeholder(tf.float32, name='pkeep')
        tst = spec.testing_flag()  # batch norm's: testing? (None for the talk's eight)

        # the model
        Ylogits = tf.identity(spec.logits(X, pkeep, tst, step), name='Ylogits')
        Y = tf.nn.softmax(Ylogits, name='Y')

        # loss function
        xent = tf.identity(cross_entropy(Ylogits, Y_, loss), name='cross_entropy')

        # % of correct answers found in batch
        prediction = tf.argmax(Y, 1, name='prediction')
        correct_prediction = tf.equal(prediction, tf.argmax(Y_, 1))
        accuracy = tf.reduce_mean(tf.cast(correct_prediction, tf.float32), name='accuracy')

        global_step = v1.train.get_or_create_global_step() if cluster else None
        # the learning rate's decay reads the step: the one fed, or on a cluster the
        # global step (the synchronous chief's queue runner applies updates unfed)
        lr = tf.identity(spec.learning_rate(
            step if not cluster else tf.cast(global_step, tf.int32)), name='lr')
        rate = graph_loop.Rate(lr) if loop else lr  # in the graph's loop: each step's own

        # training step: AdamOptimizer(lr).minimize(cross_entropy) (softmax: gradient
        # descent); batch norm's moving averages move with it (UPDATE_OPS), never else
        optimizer = spec.optimizer(rate)
        if precision == 'float16':  # float16's small gradients underflow: scale the loss
            optimizer = v1.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer,
                                                                           'dynamic')
        if cluster:
            optimizer = cluster.optimizer(optimizer)
        before = len(graph.get_operations())
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train_step = optimizer.minimize(xent, global_step=global_step, name='train_step')
        minimize_ops = range(before, len(graph.get_operations()))

        if cluster:
            with tf.control_dependencies([train_step]):
                next_step = tf.cast(global_step.read_value(), tf.int32, name='next_step')
        else:
            next_step = tf.add(step, 1, name='next_step')
        init = v1.global_variables_initializer()
        saver = v1.train.Saver(max_to_keep=3)  # weights, biases and Adam's slots
        in_graph = None
        if loop:
            in_graph = graph_loop.build(spec, lambda Ylogits, Y_: cross_entropy(Ylogits, Y_, loss),
                                        optimizer, rate, pkeep)
    if not cluster:
        graph.finalize()  # from here on the graph is fixed: a Session only runs it
    return Graph(graph, X, Y_, step, pkeep, tst, Ylogits, Y, prediction, xent, accuracy, lr,
                 train_step, next_step, init, saver, spec, session_config(loss, precision),
                 minimize_ops, global_step, in_graph)
