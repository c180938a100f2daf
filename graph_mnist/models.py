"""The networks: the talk's eight, in the talk's order, written as the talk wrote them,
then the three of its published code's batch-norm chapter; and their settings.

Each network is one function that reads like its slide: weights `W1, B1, ...` as
`tf.Variable`s, then the model line by line from the input `X` to `Ylogits`. What they
share (placeholders, softmax, cross-entropy, accuracy, learning rate, optimizer) is
written once, in `build`, which puts one network and its training step into a new
`tf.Graph` and hands back the tensors a Session will run. How a network is trained
(optimizer, learning rate, dropout, steps, the talk's figure) is its `Spec` in
`NETWORKS`; how it is called (batch norm's networks take two more inputs) is known
there too (`Spec.logits`), and nowhere else.

Nothing here computes anything: these functions only add operations to a graph.
Nothing here switches TensorFlow modes for the process: every graph is its own
`tf.Graph()`, so this module imports cleanly beside eager TensorFlow 2 code.
"""

import contextlib
import functools
import math
from typing import Callable, NamedTuple

import tensorflow as tf

v1 = tf.compat.v1  # the TensorFlow 1 API the talk used: placeholder, Session, train.*


WEIGHT_STDDEV = 0.1  # the talk's initial weights: truncated_normal(stddev=0.1)


def _weights(shape, name):
    return tf.Variable(v1.truncated_normal(shape, stddev=WEIGHT_STDDEV), name=name)


def _biases(n, name, value=0.1):
    # 0.1, a small positive value, keeps ReLUs alive at the start (the talk's choice).
    return tf.Variable(tf.constant(value, tf.float32, [n]), name=name)


# ------------------------------------------------------------------------ 1. softmax
def softmax(X, pkeep):
    r"""One layer of 10 softmax neurons on the flattened pixels.

        X [batch, 28, 28, 1]
        \x/x\x/x\x/x\x/x\x/      -- fully connected layer (softmax)
          · · · · · · · ·          W [784, 10]   B [10]
                                   Ylogits [batch, 10]
    """
    W = tf.Variable(tf.zeros([784, 10]), name='W')
    B = tf.Variable(tf.zeros([10]), name='B')
    XX = tf.reshape(X, [-1, 784])  # flatten the images into one line of 784 pixels
    Ylogits = tf.matmul(XX, W) + B
    return Ylogits


# ------------------------------------------------------------ 2-5. five dense layers
HIDDEN = (200, 100, 60, 30)  # the talk's hidden layers, widest first


def _five_layers(X, activation, bias_init, pkeep=None, layers=5):
    r"""Five fully connected layers, 200-100-60-30-10; dropout after each hidden one
    when pkeep is given.

        X [batch, 784]               (the 28x28 image, flattened)
        \x/x\x/x\x/x\x/x\x/x\x/     -- fully connected layer      W1 [784, 200]  B1 [200]
         · · · · · · · · · · ·       Y1 [batch, 200]
          \x/x\x/x\x/x\x/x\x/       -- fully connected layer      W2 [200, 100]  B2 [100]
           · · · · · · · · ·         Y2 [batch, 100]
            \x/x\x/x\x/x\x/         -- fully connected layer      W3 [100, 60]   B3 [60]
             · · · · · · ·           Y3 [batch, 60]
              \x/x\x/x\x/           -- fully connected layer      W4 [60, 30]    B4 [30]
               · · · · ·             Y4 [batch, 30]
                \x/x\x/             -- fully connected (softmax)  W5 [30, 10]    B5 [10]
                 · · ·               Ylogits [batch, 10]

    `layers` fewer than five keeps the first hidden layers ("I tried, I promise, with
    four and three and two": --layers=4 is 784-200-100-60-10). With five, the
    variables and operations are made in the talk's order, W1, B1, ... W5, B5, then
    Y1 ... Ylogits, so a seed gives the same initial weights as the talk's lines would.
    """
    sizes = [784, *HIDDEN[:layers - 1], 10]
    W, B = [], []
    for i in range(1, layers + 1):  # W1 [784, 200], B1 [200], W2 [200, 100], ...
        W.append(_weights([sizes[i - 1], sizes[i]], f'W{i}'))
        B.append(_biases(sizes[i], f'B{i}', bias_init))

    def dropout(Y):  # "shoot" a fraction 1 - pkeep of the neurons, in training only
        return Y if pkeep is None else tf.nn.dropout(Y, rate=1 - pkeep)

    Y = XX = tf.reshape(X, [-1, 784])  # the image flattened
    for Wi, Bi in zip(W[:-1], B[:-1]):  # Y1 = dropout(activation(XX.W1 + B1)), Y2, ...
        Y = dropout(activation(tf.matmul(Y, Wi) + Bi))
    Ylogits = tf.matmul(Y, W[-1]) + B[-1]
    return Ylogits


def five_layers_sigmoid(X, pkeep, layers=5):
    """2. Five layers, sigmoid activations, biases at zero."""
    return _five_layers(X, tf.nn.sigmoid, bias_init=0.0, layers=layers)


def five_layers_relu(X, pkeep, layers=5):
    """3 and 4. Five layers, ReLU activations, biases at 0.1."""
    return _five_layers(X, tf.nn.relu, bias_init=0.1, layers=layers)


def five_layers_relu_dropout(X, pkeep, layers=5):
    """5. The same five ReLU layers with dropout after each hidden layer."""
    return _five_layers(X, tf.nn.relu, bias_init=0.1, pkeep=pkeep, layers=layers)


# ------------------------------------------------------------------------- 6. conv
def conv(X, pkeep):
    r"""Three convolutional layers (strides instead of pooling), then two dense ones.

        X [batch, 28, 28, 1]
        @ @ @ @ @ @ @ @ @ @   -- conv. layer 5x5x1=>4 stride 1      W1 [5, 5, 1, 4]   B1 [4]
        ∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶                                      Y1 [batch, 28, 28, 4]
          @ @ @ @ @ @ @ @     -- conv. layer 4x4x4=>8 stride 2      W2 [4, 4, 4, 8]   B2 [8]
          ∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶                                        Y2 [batch, 14, 14, 8]
            @ @ @ @ @ @       -- conv. layer 4x4x8=>12 stride 2     W3 [4, 4, 8, 12]  B3 [12]
            ∶∶∶∶∶∶∶∶∶∶∶                                          Y3 [batch, 7, 7, 12] => [batch, 588]
           \x/x\x/x\x/      -- fully connected layer (relu)      W4 [588, 200]     B4 [200]
            · · · · · ·                                          Y4 [batch, 200]
            \x/x\x/x\x/     -- fully connected layer (softmax)   W5 [200, 10]      B5 [10]
             · · · · ·                                           Ylogits [batch, 10]

    The talk's slide has patches 5x5, 4x4, 4x4; its published code had 5x5, 5x5, 4x4.
    We follow the talk (BUILD_NOTES.md).
    """
    K, L, M, N = 4, 8, 12, 200  # output channels of the three conv layers, dense neurons
    W1 = _weights([5, 5, 1, K], 'W1')  # 5x5 patch, 1 input channel, K output channels
    B1 = _biases(K, 'B1')
    W2 = _weights([4, 4, K, L], 'W2')
    B2 = _biases(L, 'B2')
    W3 = _weights([4, 4, L, M], 'W3')
    B3 = _biases(M, 'B3')
    W4 = _weights([7 * 7 * M, N], 'W4')
    B4 = _biases(N, 'B4')
    W5 = _weights([N, 10], 'W5')
    B5 = _biases(10, 'B5')

    Y1 = tf.nn.relu(tf.nn.conv2d(X, W1, strides=[1, 1, 1, 1], padding='SAME') + B1)
    Y2 = tf.nn.relu(tf.nn.conv2d(Y1, W2, strides=[1, 2, 2, 1], padding='SAME') + B2)
    Y3 = tf.nn.relu(tf.nn.conv2d(Y2, W3, strides=[1, 2, 2, 1], padding='SAME') + B3)
    YY = tf.reshape(Y3, shape=[-1, 7 * 7 * M])  # flatten the 7x7x12 cube for the dense layer
    Y4 = tf.nn.relu(tf.matmul(YY, W4) + B4)
    Ylogits = tf.matmul(Y4, W5) + B5
    return Ylogits


# ----------------------------------------------------------------- 7. conv_dropout
def conv_dropout(X, pkeep):
    r"""A bigger convolutional network, dropout on the dense layer only.

        X [batch, 28, 28, 1]
        @ @ @ @ @ @ @ @ @ @   -- conv. layer 6x6x1=>6 stride 1      W1 [6, 6, 1, 6]   B1 [6]
        ∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶                                      Y1 [batch, 28, 28, 6]
          @ @ @ @ @ @ @ @     -- conv. layer 5x5x6=>12 stride 2     W2 [5, 5, 6, 12]  B2 [12]
          ∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶                                        Y2 [batch, 14, 14, 12]
            @ @ @ @ @ @       -- conv. layer 4x4x12=>24 stride 2    W3 [4, 4, 12, 24] B3 [24]
            ∶∶∶∶∶∶∶∶∶∶∶                                          Y3 [batch, 7, 7, 24] => [batch, 1176]
           \x/x\x/x\x/      -- fully connected layer (relu+dropout) W4 [1176, 200] B4 [200]
            · · · · · ·                                          Y4 [batch, 200]
            \x/x\x/x\x/     -- fully connected layer (softmax)   W5 [200, 10]      B5 [10]
             · · · · ·                                           Ylogits [batch, 10]
    """
    K, L, M, N = 6, 12, 24, 200
    W1 = _weights([6, 6, 1, K], 'W1')
    B1 = _biases(K, 'B1')
    W2 = _weights([5, 5, K, L], 'W2')
    B2 = _biases(L, 'B2')
    W3 = _weights([4, 4, L, M], 'W3')
    B3 = _biases(M, 'B3')
    W4 = _weights([7 * 7 * M, N], 'W4')
    B4 = _biases(N, 'B4')
    W5 = _weights([N, 10], 'W5')
    B5 = _biases(10, 'B5')

    Y1 = tf.nn.relu(tf.nn.conv2d(X, W1, strides=[1, 1, 1, 1], padding='SAME') + B1)
    Y2 = tf.nn.relu(tf.nn.conv2d(Y1, W2, strides=[1, 2, 2, 1], padding='SAME') + B2)
    Y3 = tf.nn.relu(tf.nn.conv2d(Y2, W3, strides=[1, 2, 2, 1], padding='SAME') + B3)
    YY = tf.reshape(Y3, shape=[-1, 7 * 7 * M])
    Y4 = tf.nn.relu(tf.matmul(YY, W4) + B4)
    YY4 = tf.nn.dropout(Y4, rate=1 - pkeep)  # "shoot" 25% of the dense neurons in training
    Ylogits = tf.matmul(YY4, W5) + B5
    return Ylogits


# ============================================================ beyond the talk: batch norm
#
# The repository published with the talk went on to batch normalisation
# (mnist_4.0/4.1/4.2_batchnorm_*.py, README_BATCHNORM.md). In training, each neuron's
# weighted sums are normalised with the statistics of the current batch; in testing,
# with exponential moving averages of those statistics gathered while training.
# A neuron's bias becomes the "offset" of its normalised output (so no bias); a scale
# is learnt only where the activation is not scale-invariant (sigmoid, not ReLU).

BN_EPSILON = 1e-5


def batchnorm(Ylogits, tst, step, offset, scale=None, convolutional=False, decay=0.999):
    """Normalises Ylogits per neuron: with this batch's mean and variance in training
    (tst False), with their moving averages in testing (tst True).

    A dense neuron has one value per image: its statistics are over the batch (axis 0).
    A convolutional neuron (one output channel) has one value per image and per x, y
    position: over the batch, the height and the width (axes 0, 1, 2).
    The moving averages are updated by their own op, which is added to TensorFlow's
    UPDATE_OPS collection: `build` makes the training step depend on it, so the
    averages move with every training step and never in an evaluation.
    """
    mean, variance = tf.nn.moments(Ylogits, [0, 1, 2] if convolutional else [0])
    averages = v1.train.ExponentialMovingAverage(decay, step)  # step: faster at the start
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, averages.apply([mean, variance]))
    m = tf.cond(tst, lambda: averages.average(mean), lambda: mean)
    v = tf.cond(tst, lambda: averages.average(variance), lambda: variance)
    return tf.nn.batch_normalization(Ylogits, m, v, offset, scale, BN_EPSILON)


def _offsets(n, name, value):
    return tf.Variable(tf.constant(value, tf.float32, [n]), name=name)


def _scales(n, name):
    return tf.Variable(tf.ones([n]), name=name)


# -------------------------------------------------- 8-9. five dense layers + batch norm
def _batchnorm_five_layers(X, tst, step, activation, offset_init, scaled, decay):
    r"""The five dense layers, batch norm before each hidden activation.

        X [batch, 784]               (the 28x28 image, flattened)
        \x/x\x/x\x/x\x/x\x/x\x/     -- fully connected + BN    W1 [784, 200]  B1 [200] (S1 [200])
         · · · · · · · · · · ·       Y1 [batch, 200]
          \x/x\x/x\x/x\x/x\x/       -- fully connected + BN    W2 [200, 100]  B2 [100] (S2 [100])
           · · · · · · · · ·         Y2 [batch, 100]
            \x/x\x/x\x/x\x/         -- fully connected + BN    W3 [100, 60]   B3 [60]  (S3 [60])
             · · · · · · ·           Y3 [batch, 60]
              \x/x\x/x\x/           -- fully connected + BN    W4 [60, 30]    B4 [30]  (S4 [30])
               · · · · ·             Y4 [batch, 30]
                \x/x\x/             -- fully connected (softmax)  W5 [30, 10]  B5 [10]
                 · · ·               Ylogits [batch, 10]

    B1..B4 are the batch norm offsets; S1..S4, the scales, only when `scaled` (sigmoid).
    """
    L, M, N, O = 200, 100, 60, 30
    W1 = _weights([784, L], 'W1')
    B1 = _offsets(L, 'B1', offset_init)
    W2 = _weights([L, M], 'W2')
    B2 = _offsets(M, 'B2', offset_init)
    W3 = _weights([M, N], 'W3')
    B3 = _offsets(N, 'B3', offset_init)
    W4 = _weights([N, O], 'W4')
    B4 = _offsets(O, 'B4', offset_init)
    W5 = _weights([O, 10], 'W5')
    B5 = _biases(10, 'B5', offset_init)
    S1, S2, S3, S4 = (_scales(n, f'S{i}') for i, n in enumerate((L, M, N, O), 1)) \
        if scaled else (None,) * 4

    def bn(Ylogits, offset, scale):
        return batchnorm(Ylogits, tst, step, offset, scale, decay=decay)

    XX = tf.reshape(X, [-1, 784])
    Y1 = activation(bn(tf.matmul(XX, W1), B1, S1))
    Y2 = activation(bn(tf.matmul(Y1, W2), B2, S2))
    Y3 = activation(bn(tf.matmul(Y2, W3), B3, S3))
    Y4 = activation(bn(tf.matmul(Y3, W4), B4, S4))
    Ylogits = tf.matmul(Y4, W5) + B5
    return Ylogits


def batchnorm_five_layers_sigmoid(X, pkeep, tst, step):
    """8. (mnist_4.0) Five sigmoid layers with batch norm: offsets at 0 and scales, as
    sigmoid is not scale-invariant."""
    return _batchnorm_five_layers(X, tst, step, tf.nn.sigmoid, offset_init=0.0, scaled=True,
                                  decay=0.998)


def batchnorm_five_layers_relu(X, pkeep, tst, step):
    """9. (mnist_4.1) Five ReLU layers with batch norm: offsets at 0.1, no scale (a ReLU
    does not care about the scale of its input: the next layer's weights absorb it)."""
    return _batchnorm_five_layers(X, tst, step, tf.nn.relu, offset_init=0.1, scaled=False,
                                  decay=0.998)


# ------------------------------------------------------------ 10. batchnorm_conv
def batchnorm_conv(X, pkeep, tst, step):
    r"""(mnist_4.2) A wider convolutional network, batch norm on every layer but the
    last, dropout on the dense layer.

        X [batch, 28, 28, 1]
        @ @ @ @ @ @ @ @ @ @   -- conv. 6x6x1=>24 stride 1 + BN      W1 [6, 6, 1, 24]   B1 [24]
        ∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶                                      Y1 [batch, 28, 28, 24]
          @ @ @ @ @ @ @ @     -- conv. 5x5x24=>48 stride 2 + BN     W2 [5, 5, 24, 48]  B2 [48]
          ∶∶∶∶∶∶∶∶∶∶∶∶∶∶∶                                        Y2 [batch, 14, 14, 48]
            @ @ @ @ @ @       -- conv. 4x4x48=>64 stride 2 + BN     W3 [4, 4, 48, 64]  B3 [64]
            ∶∶∶∶∶∶∶∶∶∶∶                                          Y3 [batch, 7, 7, 64] => [batch, 3136]
           \x/x\x/x\x/      -- fully connected + BN (relu+dropout) W4 [3136, 200]  B4 [200]
            · · · · · ·                                          Y4 [batch, 200]
            \x/x\x/x\x/     -- fully connected layer (softmax)   W5 [200, 10]       B5 [10]
             · · · · ·                                           Ylogits [batch, 10]

    B1..B4 are batch norm offsets (ReLU: no scale). The published file's picture still
    says 6/12/24 channels; its code, and this, use 24/48/64.
    """
    K, L, M, N = 24, 48, 64, 200
    W1 = _weights([6, 6, 1, K], 'W1')
    B1 = _offsets(K, 'B1', 0.1)
    W2 = _weights([5, 5, K, L], 'W2')
    B2 = _offsets(L, 'B2', 0.1)
    W3 = _weights([4, 4, L, M], 'W3')
    B3 = _offsets(M, 'B3', 0.1)
    W4 = _weights([7 * 7 * M, N], 'W4')
    B4 = _offsets(N, 'B4', 0.1)
    W5 = _weights([N, 10], 'W5')
    B5 = _biases(10, 'B5')

    def bn(Ylogits, offset, convolutional=True):
        return batchnorm(Ylogits, tst, step, offset, convolutional=convolutional, decay=0.999)

    Y1 = tf.nn.relu(bn(tf.nn.conv2d(X, W1, strides=[1, 1, 1, 1], padding='SAME'), B1))
    Y2 = tf.nn.relu(bn(tf.nn.conv2d(Y1, W2, strides=[1, 2, 2, 1], padding='SAME'), B2))
    Y3 = tf.nn.relu(bn(tf.nn.conv2d(Y2, W3, strides=[1, 2, 2, 1], padding='SAME'), B3))
    YY = tf.reshape(Y3, shape=[-1, 7 * 7 * M])
    Y4 = tf.nn.relu(bn(tf.matmul(YY, W4), B4, convolutional=False))
    YY4 = tf.nn.dropout(Y4, rate=1 - pkeep)
    Ylogits = tf.matmul(YY4, W5) + B5
    return Ylogits


# ------------------------------------------------------------ the talk's settings


class ConstantRate(NamedTuple):
    """A fixed learning rate."""
    rate: float

    def __call__(self, step):
        return tf.constant(self.rate, tf.float32)

    def __str__(self):
        return f'{self.rate:g}'


class DecayingRate(NamedTuple):
    """floor + start * exp(-step/period): start fast, slow down (the talk's decay)."""
    start: float = 0.003
    period: float = 2000
    floor: float = 0.0001

    def __call__(self, step):
        return self.floor + v1.train.exponential_decay(self.start, step, self.period, 1 / math.e)

    def __str__(self):
        return f'{self.floor:g} + {self.start:g}·e^(−step/{self.period:g})'


class Talk(NamedTuple):
    """One step of the talk: what it changed, why, and what it reached, in its words."""
    accuracy: float    # the talk's figure to check (0.993 for "99.3%"); None: it gives none
    says: str          # its words about the result, verbatim ("..." where words are left out)
    code: float = None  # the published code's note for this network (mnist_*.py) ...
    code_is: str = 'final'  # ... a 'final' accuracy (mnist_2.x) or the 'max' (mnist_3.x)
    change: str = ''   # what this step changes from the one before (our words)
    why: str = ''      # the talk's reason for the change, verbatim
    settings: str = ''  # where each setting comes from: the talk, its published code, or us


class Spec(NamedTuple):
    """How the talk trained one network: the one place its settings and figure live."""
    network: Callable          # X, pkeep -> Ylogits
    optimizer: Callable        # learning rate -> a tf.compat.v1.train optimizer
    learning_rate: Callable    # step tensor -> learning-rate tensor (ConstantRate, DecayingRate)
    pkeep: float               # keep probability fed while training (1.0: no dropout)
    iterations: int            # the talk's number of training steps
    talk: Talk                 # what the talk reports
    batch_norm: bool = False   # beyond the talk: network(X, pkeep, tst, step), see batchnorm
    plain: str = None          # batch norm networks: the talk's network they improve upon

    @property
    def talk_accuracy(self):
        """The talk's figure as written in history.json and the summary line."""
        return self.talk.says

    @property
    def has_dropout(self):
        """Does the network shoot neurons when fed pkeep < 1 (--pkeep means something)?"""
        return _base(self.network) in (five_layers_relu_dropout, conv_dropout, batchnorm_conv)

    @property
    def dense(self):
        """One of the five dense layers networks (--layers means something)?"""
        return _base(self.network) in (five_layers_sigmoid, five_layers_relu,
                                       five_layers_relu_dropout)

    def testing_flag(self):
        """Batch norm's placeholder `tst` (default False: training; True: the moving
        averages), None for the talk's eight (one more op would shift their random
        seeds). Call inside the graph being built."""
        return v1.placeholder_with_default(False, [], name='tst') if self.batch_norm else None

    def logits(self, X, pkeep, tst=True, step=0):
        """Ylogits of this network on X: the talk's eight take (X, pkeep); batch norm's
        also take tst (testing: use the moving averages) and step (which moves them),
        tensors or plain values. The one place that knows how a network is called."""
        if not self.batch_norm:
            return self.network(X, pkeep)
        return self.network(X, pkeep, tf.convert_to_tensor(tst), tf.convert_to_tensor(step))


def _base(network):
    return network.func if isinstance(network, functools.partial) else network


SGD, ADAM = v1.train.GradientDescentOptimizer, v1.train.AdamOptimizer
DECAY = DecayingRate()  # 0.0001 + 0.003·e^(−step/2000)
_ADAM_DECAY = 'code: Adam, the decay 0.0001 + 0.003·e^(−step/2000)'

# The talk's order. Names are the --model values. Quotes are the transcript's words.
NETWORKS = {
    'softmax': Spec(softmax, SGD, ConstantRate(0.005), 1.0, 2000, Talk(
        0.92, '"after 2,000 rounds of training ... it\'s already capable of recognizing 92% '
              'of our images"',
        change='one layer of 10 softmax neurons on the 784 pixels',
        why='"from the simplest possible network all the way to 99% accuracy"',
        settings='talk: the layer, cross-entropy, batches of 100, 2,000 steps; '
                 'code: gradient descent at 0.005, weights at 0')),
    'five_layers_sigmoid': Spec(five_layers_sigmoid, ADAM, ConstantRate(0.003), 1.0, 10000,
                                Talk(0.979, '"The accuracy got up to 97.9% using five layers."',
                                     code=0.9788,
                                     change='five layers, 200-100-60-30-10, sigmoid',
                                     why='"We\'ll go deep. We can just stack those layers."',
                                     settings='talk: the layers, sigmoid, 10,000 steps; code: '
                                              'Adam at 0.003, weights truncated normal 0.1, '
                                              'biases 0')),
    'five_layers_relu': Spec(five_layers_relu, ADAM, ConstantRate(0.003), 1.0, 10000, Talk(
        0.98, '"Let\'s do this for 10,000 iterations, five layers, look at that. 98% '
              'accuracy."', code=0.9825,
        change='ReLU instead of sigmoid, biases 0.1',
        why='"The accuracy shoots up really sharp."',
        settings='talk: ReLU; code: biases 0.1, Adam at 0.003')),
    'five_layers_relu_lrdecay': Spec(five_layers_relu, ADAM, DECAY, 1.0, 10000, Talk(
        0.98, '"now we are stable or above 98% accuracy"', code=0.9824,
        change='the learning rate decays from 0.003 to 0.0001',
        why='"when you see noise like that, it means that you are going too fast"',
        settings='talk: an exponential decay; ' + _ADAM_DECAY)),
    'five_layers_relu_lrdecay_dropout': Spec(five_layers_relu_dropout, ADAM, DECAY, 0.75,
                                             10000, Talk(
        None, '"Let\'s look at the accuracy. No improvement."', code=0.9817,
        change='dropout after each hidden layer, pkeep 0.75',
        why='"it\'s called overfitting. You look at the solutions, they tell you '
            'overfitting, you need regularization."',
        settings='talk: dropout ("pick a probability, let\'s say 50%"); code: pkeep 0.75')),
    'conv': Spec(conv, ADAM, DECAY, 1.0, 10000, Talk(
        0.989, '"We\'ll have to do something more, 98.9."', code=0.9892, code_is='max',
        change='three convolutional layers, 4, 8, 12 patches of 5x5, 4x4, 4x4, strides 1, '
               '2, 2; dense 200',
        why='"So all that shape information is lost."',
        settings='talk: the layers, patches, strides; ' + _ADAM_DECAY)),
    'conv_bigger': Spec(conv_dropout, ADAM, DECAY, 1.0, 10000, Talk(
        0.99, '"You see, we are already above 99%."', code=0.9906, code_is='max',
        change='6, 12, 24 patches of 6x6, 5x5, 4x4: conv_dropout\'s layers, no dropout',
        why='"I give it a little bit more freedom and apply dropout"',
        settings='talk: the layers (shown only as curves); ' + _ADAM_DECAY)),
    'conv_dropout': Spec(conv_dropout, ADAM, DECAY, 0.75, 10000, Talk(
        0.993, '"I promised you will get above 99 and we are actually quite comfortably '
               'above. We get to 99.3%."', code=0.9931, code_is='max',
        change='dropout on the dense layer, pkeep 0.75',
        why='"there is a lot more neurons in the fully connected layer. So it\'s a lot more '
            'efficient to be shooting them there."',
        settings='talk: dropout on the dense layer; code: pkeep 0.75, the decay, Adam')),
    # beyond the talk: the published code's batch-norm chapter, its settings and notes
    'batchnorm_five_layers_sigmoid': Spec(
        batchnorm_five_layers_sigmoid, ADAM, DecayingRate(0.03, 1000), 1.0, 10000,
        Talk(None, 'no figure in its notes (mnist_4.0)'), batch_norm=True,
        plain='five_layers_sigmoid'),
    'batchnorm_five_layers_relu': Spec(
        batchnorm_five_layers_relu, ADAM, DecayingRate(0.03, 1000), 1.0, 10000,
        Talk(0.985, '"steady 98.5%", max 0.9859 (mnist_4.1 notes)'), batch_norm=True,
        plain='five_layers_relu_lrdecay'),
    'batchnorm_conv': Spec(
        batchnorm_conv, ADAM, DecayingRate(0.02, 1600), 0.75, 10000,
        Talk(0.995, 'max 0.9956, "stable above 0.995" (mnist_4.2 notes)'), batch_norm=True,
        plain='conv_dropout'),
}
TALK = [name for name, spec in NETWORKS.items() if not spec.batch_norm]  # the talk's eight
BEYOND = [name for name, spec in NETWORKS.items() if spec.batch_norm]

# The experiments the talk invites, one flag each (graph_mnist.train): another learning
# rate, another pkeep ("pick a probability, let's say 50%"), fewer dense layers ("I
# tried, I promise, with four and three and two").
EXPERIMENTS = ('learning_rate', 'pkeep', 'layers')


def with_changes(name, learning_rate=None, pkeep=None, layers=None):
    """NETWORKS[name] with the talk's experiments applied (None: the network's own
    setting). learning_rate replaces a constant rate, or the decay's start; pkeep the
    keep probability of a network with dropout; layers (2 to 5) the depth of the dense
    networks. ValueError, saying why, where a change would change nothing."""
    spec = NETWORKS[name]
    if learning_rate is not None:
        if not learning_rate > 0:
            raise ValueError(f'--learning_rate must be above 0, got {learning_rate}')
        rate = spec.learning_rate
        spec = spec._replace(learning_rate=rate._replace(
            **{'rate' if isinstance(rate, ConstantRate) else 'start': learning_rate}))
    if pkeep is not None:
        if not 0 < pkeep <= 1:
            raise ValueError(f'--pkeep is a probability of keeping a neuron, in (0, 1], '
                             f'got {pkeep}')
        if not spec.has_dropout:
            raise ValueError(f'--pkeep changes nothing on {name}: it has no dropout; the '
                             f'networks with dropout: {", ".join(_with(Spec.has_dropout))}')
        spec = spec._replace(pkeep=pkeep)
    if layers is not None:
        if not spec.dense:
            raise ValueError(f'--layers is for the dense networks '
                             f'({", ".join(_with(Spec.dense))}), not {name}')
        if not 2 <= layers <= 5:
            raise ValueError(f'--layers must be 2, 3, 4 or 5 (the talk\'s), got {layers}')
        spec = spec._replace(network=functools.partial(spec.network, layers=layers))
    return spec


def _with(prop):
    return [name for name, spec in NETWORKS.items() if prop.fget(spec)]


def describe_changes(name, changes):
    """The experiments of a run as a change from the network's settings, in words
    ('' when there is none): for the dashboard's title and the log."""
    spec, parts = NETWORKS[name], []
    if changes.get('learning_rate') is not None:
        rate = spec.learning_rate
        was = rate.rate if isinstance(rate, ConstantRate) else rate.start
        kind = 'learning rate' if isinstance(rate, ConstantRate) else 'decay from'
        parts.append(f'{kind} {changes["learning_rate"]:g} (the talk\'s: {was:g})')
    if changes.get('pkeep') is not None:
        parts.append(f'pkeep {changes["pkeep"]:g} (the talk\'s: {spec.pkeep:g})')
    if changes.get('layers') is not None:
        parts.append(f'{changes["layers"]} layers (the talk\'s: 5)')
    return ', '.join(parts)

LOSSES = ('stable', 'literal')
LOSS_SCALE = 100  # the cross-entropy is the batch mean times this: the sum over 100 images


class Graph(NamedTuple):
    """One network's graph and the tensors a training loop runs and feeds."""
    graph: tf.Graph
    X: tf.Tensor              # placeholder: images [batch, 28, 28, 1]
    Y_: tf.Tensor             # placeholder: correct answers, one-hot [batch, 10]
    step: tf.Tensor           # placeholder: the training step, for the learning-rate decay
    pkeep: tf.Tensor          # placeholder: probability of keeping a neuron (dropout);
                              # fed 1.0 to evaluate, used by the dropout networks only
    tst: tf.Tensor            # placeholder (default False): testing? Batch norm networks
                              # only (None for the talk's eight): True uses the averages
    Ylogits: tf.Tensor
    Y: tf.Tensor              # the ten probabilities
    prediction: tf.Tensor     # the recognised digit, argmax of Y
    cross_entropy: tf.Tensor  # summed over a batch of 100, as the talk's code scaled it
    accuracy: tf.Tensor
    lr: tf.Tensor
    train_step: tf.Operation
    init: tf.Operation
    spec: Spec
    config: object            # the tf.compat.v1.ConfigProto a Session of this graph needs
    forward_ops: int          # graph.get_operations()[:forward_ops] existed before minimize,
    minimize_ops: int         # [forward_ops:minimize_ops] are the ops minimize added
    weights: list             # the W variables, for the dashboard's spread and TensorBoard
    biases: list              # the B variables
    saver: object             # tf.compat.v1.train.Saver of every variable (optimizer's,
                              # batch norm's moving averages too)
    global_step: tf.Variable = None  # on a cluster: the step all workers add to
    cluster: dict = None      # on a cluster: the operations its sessions start and end with
                              # (graph_mnist.distributed.Placement.operations)
    loop: dict = None         # build(loop=True): the training loop in the graph
                              # (training_loop: load, images, labels, indices, first, run)

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


def session_config(loss):
    """Session settings for a loss: 'literal' must stay literal.

    TensorFlow's graph optimizer (Grappler) rewrites Log(Softmax(x)) into LogSoftmax(x)
    wherever it can, which would quietly make the talk's literal line stable, or not,
    depending on what else is fetched. For --loss=literal that rewrite is switched off.
    """
    config = v1.ConfigProto()
    if loss == 'literal':
        off = config.graph_options.rewrite_options.OFF
        config.graph_options.rewrite_options.arithmetic_optimization = off
    return config


def build(name, loss='stable', seed=0, placement=None, loop=False, changes=None):
    """Builds network `name` with its loss, accuracy and training step in a new tf.Graph.

    changes: the talk's experiments (`with_changes`'s arguments), None for none.

    placement: None on one machine. On a cluster, graph_mnist.distributed's Placement,
    which says where the graph goes (`device`), makes the global step (after the
    network, so that the initial weights are those of the same seed on one machine),
    may wrap the optimizer (synchronous replicas) and adds the operations the cluster's
    sessions start and end with (`operations`, kept in Graph.cluster).
    loop: also the training loop moved into the graph (`Graph.loop`, see
    `training_loop`): many training steps in one Session.run."""
    spec = with_changes(name, **(changes or {}))
    graph = tf.Graph()
    on_cluster = graph.device(placement.device) if placement else contextlib.nullcontext()
    with graph.as_default(), on_cluster:
        v1.set_random_seed(seed)  # graph-level seed: same seed, same initial weights
        X = v1.placeholder(tf.float32, [None, 28, 28, 1], name='X')
        Y_ = v1.placeholder(tf.float32, [None, 10], name='Y_')
        step = v1.placeholder(tf.int32, name='step')
        pkeep = v1.placeholder(tf.float32, name='pkeep')
        tst = spec.testing_flag()
        created = len(v1.global_variables())
        Ylogits = tf.identity(spec.logits(X, pkeep, tst, step), name='Ylogits')
        network_variables = v1.global_variables()[created:]  # in the order made
        Y = tf.nn.softmax(Ylogits, name='Y')
        xent = tf.identity(cross_entropy(Ylogits, Y_, loss), name='cross_entropy')

        prediction = tf.argmax(Y, 1, name='prediction')
        correct_prediction = tf.equal(prediction, tf.argmax(Y_, 1))
        accuracy = tf.reduce_mean(tf.cast(correct_prediction, tf.float32), name='accuracy')

        global_step = placement.global_step() if placement else None
        # on a cluster the decay reads the global step: with synchronous replicas the
        # chief's queue runner applies the gradients, and it feeds no step
        lr = tf.identity(spec.learning_rate(
            step if global_step is None else tf.cast(global_step, tf.int32)), name='lr')
        rate = {'lr': lr}  # with the loop in the graph, each step inside has its own
        optimizer = spec.optimizer((lambda: rate['lr']) if loop else lr)
        if placement:
            optimizer = placement.optimizer(optimizer)
        forward_ops = len(graph.get_operations())
        # minimize adds the gradients (formal differentiation of xent) and the updates;
        # batch norm's moving averages are updated with every training step, never else
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train_step = optimizer.minimize(xent, global_step=global_step, name='train_step')
        minimize_ops = len(graph.get_operations())
        init = v1.global_variables_initializer()
        variables = v1.trainable_variables()
        saver = v1.train.Saver(max_to_keep=3)  # weights, biases and Adam's slots
        cluster = placement.operations(optimizer, train_step, global_step) \
            if placement else None
        in_graph = training_loop(spec, loss, network_variables, optimizer, rate, pkeep) \
            if loop else None
    graph.finalize()  # from here on the graph is fixed: a Session only runs it
    return Graph(graph, X, Y_, step, pkeep, tst, Ylogits, Y, prediction, xent, accuracy, lr,
                 train_step, init, spec, session_config(loss), forward_ops, minimize_ops,
                 weights=[v for v in variables if v.op.name.startswith('W')],
                 biases=[v for v in variables if v.op.name.startswith('B')], saver=saver,
                 global_step=global_step, cluster=cluster, loop=in_graph)


def training_loop(spec, loss, network_variables, optimizer, rate, pkeep):
    """The training loop moved into the graph: the training set held in the graph once,
    then `tf.while_loop` runs one training step per row of `indices` (the images of each
    batch, as data.Batches draws them), step numbers counting from `first`. Each step is
    the talk's: the network written once more inside the loop on the same variables
    (`tf.variable_creator_scope` hands back the ones `build` made, batch norm's averages
    included), the same cross-entropy, the learning rate of its own step, the same
    optimizer and slots, batch norm's averages moved by the step. Returns the tensors
    a Session feeds and runs (Graph.loop)."""
    images = v1.placeholder(tf.float32, [None, 28, 28, 1], name='training_images')
    labels = v1.placeholder(tf.float32, [None, 10], name='training_labels')
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
        xent = cross_entropy(Ylogits, tf.gather(all_Y, indices[i]), loss)
        rate['lr'] = spec.learning_rate(first + i)
        with tf.control_dependencies(moved):
            update = optimizer.apply_gradients(zip(tf.gradients(xent, trained), trained))
        with tf.control_dependencies([update]):
            return i + 1, tf.identity(xent)

    # batch norm's averages make their variables outside the loop's graph (init_scope):
    # the same hand-over there
    with tf.variable_creator_scope(the_same_variables):
        _, last = v1.while_loop(lambda i, _: i < tf.shape(indices)[0], step,
                                [tf.constant(0), tf.constant(0.0)], name='training_loop')
    return {'load': [data_X.initializer, data_Y.initializer], 'images': images,
            'labels': labels, 'indices': indices, 'first': first, 'run': last}


def trainable_parameters(g):
    """Number of values the optimizer adjusts, e.g. 7,850 for softmax."""
    with g.graph.as_default():
        return sum(v.shape.num_elements() for v in v1.trainable_variables())


# ------------------------------------------------------- the layers, read off the graph


class Layer(NamedTuple):
    """One layer as the graph holds it (see `layers`).

    kind: 'conv', 'dense' or 'dropout'. For conv, size is the input's height (= width),
    patch the filter's side, and the output is ceil(size / stride) square (padding SAME);
    for dense, size and patch are 1. init: 'zeros' or 'truncated_normal' (the weights);
    bias: the biases' initial value; activation: 'relu', 'sigmoid' or None (the logits);
    rate: the fraction a dropout layer drops in training.
    """
    kind: str
    n_in: int = 0
    n_out: int = 0
    size: int = 1
    patch: int = 1
    stride: int = 1
    activation: str = None
    init: str = None
    bias: float = None
    rate: float = None
    batch_norm: bool = False  # normalised before its activation; `bias` is then the offset
    scale: bool = False       # batch norm with a learnt scale (sigmoid)

    @property
    def out_size(self):
        return -(-self.size // self.stride)

    @property
    def out_shape(self):
        """The shape of one image's output: (height, width, channels) or (neurons,)."""
        if self.kind == 'dropout':
            return None
        return (self.out_size, self.out_size, self.n_out) if self.kind == 'conv' else \
            (self.n_out,)

    @property
    def parameters(self):
        """Trainable values: weights, biases (or offsets), scales."""
        if not self.n_out:
            return 0
        return self.patch * self.patch * self.n_in * self.n_out + self.n_out * (1 + self.scale)

    @property
    def macs(self):
        """Multiply-adds of its forward pass for one image (biases, activations left out)."""
        return self.out_size ** 2 * self.patch ** 2 * self.n_in * self.n_out


def _variable(tensor):
    """The variable a tensor reads (through ReadVariableOp / Identity)."""
    op = tensor.op
    while op.type in ('ReadVariableOp', 'Identity'):
        op = op.inputs[0].op
    return op.name


def _what_follows(tensor):
    """From a weighted sum to its activation: (variables read on the way, the activation
    or None, whether batch norm's moments are taken)."""
    variables, activation, normalised = set(), None, False
    seen, queue = set(), list(tensor.consumers())
    while queue:
        op = queue.pop(0)
        if op.name in seen or op.type in ('Conv2D', 'MatMul'):
            continue
        seen.add(op.name)
        if op.type in ('Relu', 'Sigmoid'):
            activation = op.type.lower()
            continue
        normalised |= 'moments' in op.name
        variables |= {_variable(t) for t in op.inputs if t.op.type == 'ReadVariableOp'}
        queue += [c for t in op.outputs for c in t.consumers()]
    return variables, activation, normalised


def layers(name, changes=None):
    """Network `name` as a list of Layers, read off its own graph: the functions above
    are the only description of a network; the benchmark's Keras and PyTorch twins, its
    operation count and the README's table all come from here. changes: the talk's
    experiments (`with_changes`)."""
    spec = with_changes(name, **(changes or {}))
    graph = tf.Graph()
    with graph.as_default():
        spec.logits(v1.placeholder(tf.float32, [None, 28, 28, 1]), v1.placeholder(tf.float32),
                    v1.placeholder(tf.bool), v1.placeholder(tf.int32))
        initial = {v.op.name: tf.get_static_value(v.initial_value)
                   for v in v1.global_variables()}
    found = []
    for op in graph.get_operations():  # in the order the network function wrote them
        if op.type == 'RandomUniform':  # the mask of tf.nn.dropout
            found.append(Layer('dropout', rate=1 - spec.pkeep))
        if op.type not in ('Conv2D', 'MatMul'):
            continue
        W = _variable(op.inputs[1])
        shape = op.inputs[1].shape.as_list()
        variables, activation, normalised = _what_follows(op.outputs[0])
        B, = [v for v in variables if v.startswith('B')]  # the bias, or batch norm's offset
        init = 'zeros' if initial[W] is not None and not initial[W].any() else 'truncated_normal'
        bias = round(float(initial[B].flat[0]), 6)  # float32 0.1 -> 0.1
        common = dict(activation=activation, init=init, bias=bias, batch_norm=normalised,
                      scale=any(v.startswith('S') for v in variables))
        if op.type == 'Conv2D':
            assert op.get_attr('padding') == b'SAME' and op.get_attr('data_format') == b'NHWC'
            layer = Layer('conv', shape[2], shape[3], op.inputs[0].shape[1], shape[0],
                          op.get_attr('strides')[1], **common)
        else:
            layer = Layer('dense', shape[0], shape[1], **common)
        assert tuple(op.outputs[0].shape[1:]) == layer.out_shape, (op.name, layer)
        found.append(layer)
    return found


def forward_macs(name):
    """Multiply-adds of one image's forward pass through network `name`."""
    return sum(layer.macs for layer in layers(name))


def training_flops_per_image(name):
    """FLOPs of one image's training step: 2 per multiply-add, x 3 for forward then
    backward (gradients with respect to the activations and to the weights, each as
    costly as the forward pass). Biases, activations, softmax and the optimizer's
    updates are left out (a few % at most)."""
    return 3 * 2 * forward_macs(name)
