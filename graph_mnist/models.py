"""The networks: the talk's, in the talk's order, each written as the talk wrote it, then
the three of its published code's batch-norm chapter. Nothing else lives here: how a
network is trained is graph_mnist.talk, the graph around it (placeholders, the
cross-entropy, the optimizer) graph_mnist.training_graph.

Each network is one function that reads like its slide, with its picture: weights
`W1, B1, ...` as `tf.Variable`s with the talk's initial values, then the model line by
line from the input `X` to `Ylogits`. The talk's code made its variables at the top
level of the script; here each network function makes them when called, inside the
graph being built (`tf.Graph()`), so every run has a graph of its own.

Nothing here computes anything and nothing switches TensorFlow modes: these functions
only add operations to the graph being built (or, called in a tf.function, to its trace).
"""

import tensorflow as tf

v1 = tf.compat.v1  # the TensorFlow 1 API the talk used: truncated_normal, train.*


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
        W.append(tf.Variable(v1.truncated_normal([sizes[i - 1], sizes[i]], stddev=0.1),
                             name=f'W{i}'))
        B.append(tf.Variable(tf.constant(bias_init, tf.float32, [sizes[i]]), name=f'B{i}'))

    def dropout(Y):  # "shoot" a fraction 1 - pkeep of the neurons, in training only
        return Y if pkeep is None else tf.nn.dropout(Y, rate=1 - pkeep)

    XX = tf.reshape(X, [-1, 784])  # the image flattened
    Y = XX
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
    W1 = tf.Variable(v1.truncated_normal([5, 5, 1, K], stddev=0.1), name='W1')  # 5x5, 1 in, K out
    B1 = tf.Variable(tf.constant(0.1, tf.float32, [K]), name='B1')
    W2 = tf.Variable(v1.truncated_normal([4, 4, K, L], stddev=0.1), name='W2')
    B2 = tf.Variable(tf.constant(0.1, tf.float32, [L]), name='B2')
    W3 = tf.Variable(v1.truncated_normal([4, 4, L, M], stddev=0.1), name='W3')
    B3 = tf.Variable(tf.constant(0.1, tf.float32, [M]), name='B3')
    W4 = tf.Variable(v1.truncated_normal([7 * 7 * M, N], stddev=0.1), name='W4')
    B4 = tf.Variable(tf.constant(0.1, tf.float32, [N]), name='B4')
    W5 = tf.Variable(v1.truncated_normal([N, 10], stddev=0.1), name='W5')
    B5 = tf.Variable(tf.constant(0.1, tf.float32, [10]), name='B5')

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
    K, L, M, N = 6, 12, 24, 200  # output channels of the three conv layers, dense neurons
    W1 = tf.Variable(v1.truncated_normal([6, 6, 1, K], stddev=0.1), name='W1')  # 6x6, 1 in, K out
    B1 = tf.Variable(tf.constant(0.1, tf.float32, [K]), name='B1')
    W2 = tf.Variable(v1.truncated_normal([5, 5, K, L], stddev=0.1), name='W2')
    B2 = tf.Variable(tf.constant(0.1, tf.float32, [L]), name='B2')
    W3 = tf.Variable(v1.truncated_normal([4, 4, L, M], stddev=0.1), name='W3')
    B3 = tf.Variable(tf.constant(0.1, tf.float32, [M]), name='B3')
    W4 = tf.Variable(v1.truncated_normal([7 * 7 * M, N], stddev=0.1), name='W4')
    B4 = tf.Variable(tf.constant(0.1, tf.float32, [N]), name='B4')
    W5 = tf.Variable(v1.truncated_normal([N, 10], stddev=0.1), name='W5')
    B5 = tf.Variable(tf.constant(0.1, tf.float32, [10]), name='B5')

    Y1 = tf.nn.relu(tf.nn.conv2d(X, W1, strides=[1, 1, 1, 1], padding='SAME') + B1)
    Y2 = tf.nn.relu(tf.nn.conv2d(Y1, W2, strides=[1, 2, 2, 1], padding='SAME') + B2)
    Y3 = tf.nn.relu(tf.nn.conv2d(Y2, W3, strides=[1, 2, 2, 1], padding='SAME') + B3)
    YY = tf.reshape(Y3, shape=[-1, 7 * 7 * M])  # flatten the 7x7x24 cube for the dense layer
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


def batchnorm_fused(Ylogits, tst, step, offset, scale=None, convolutional=False, decay=0.999):
    """batchnorm as one fused op (--batch_norm=fused, graph_mnist.rewrite): the batch's
    statistics and the normalisation in tf.nn.fused_batch_norm, a dense layer's
    [batch, n] seen as [batch, 1, 1, n]; the same moving averages, of the batch variance
    the op returns (with Bessel's correction, where moments has none)."""
    X = Ylogits if convolutional else tf.reshape(Ylogits, [-1, 1, 1, Ylogits.shape[-1]])
    scale = tf.ones_like(offset) if scale is None else scale
    Y, mean, variance = v1.nn.fused_batch_norm(X, scale, offset, epsilon=BN_EPSILON)
    averages = v1.train.ExponentialMovingAverage(decay, step)
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, averages.apply([mean, variance]))
    Y = tf.cond(tst, lambda: v1.nn.fused_batch_norm(
        X, scale, offset, averages.average(mean), averages.average(variance), BN_EPSILON,
        is_training=False)[0], lambda: Y)
    return Y if convolutional else tf.reshape(Y, tf.shape(Ylogits))


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
    W1 = tf.Variable(v1.truncated_normal([784, L], stddev=0.1), name='W1')
    B1 = tf.Variable(tf.constant(offset_init, tf.float32, [L]), name='B1')
    W2 = tf.Variable(v1.truncated_normal([L, M], stddev=0.1), name='W2')
    B2 = tf.Variable(tf.constant(offset_init, tf.float32, [M]), name='B2')
    W3 = tf.Variable(v1.truncated_normal([M, N], stddev=0.1), name='W3')
    B3 = tf.Variable(tf.constant(offset_init, tf.float32, [N]), name='B3')
    W4 = tf.Variable(v1.truncated_normal([N, O], stddev=0.1), name='W4')
    B4 = tf.Variable(tf.constant(offset_init, tf.float32, [O]), name='B4')
    W5 = tf.Variable(v1.truncated_normal([O, 10], stddev=0.1), name='W5')
    B5 = tf.Variable(tf.constant(offset_init, tf.float32, [10]), name='B5')
    S1, S2, S3, S4 = (None,) * 4
    if scaled:
        S1, S2, S3, S4 = (tf.Variable(tf.ones([n]), name=f'S{i}')
                          for i, n in enumerate((L, M, N, O), 1))

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
    W1 = tf.Variable(v1.truncated_normal([6, 6, 1, K], stddev=0.1), name='W1')
    B1 = tf.Variable(tf.constant(0.1, tf.float32, [K]), name='B1')
    W2 = tf.Variable(v1.truncated_normal([5, 5, K, L], stddev=0.1), name='W2')
    B2 = tf.Variable(tf.constant(0.1, tf.float32, [L]), name='B2')
    W3 = tf.Variable(v1.truncated_normal([4, 4, L, M], stddev=0.1), name='W3')
    B3 = tf.Variable(tf.constant(0.1, tf.float32, [M]), name='B3')
    W4 = tf.Variable(v1.truncated_normal([7 * 7 * M, N], stddev=0.1), name='W4')
    B4 = tf.Variable(tf.constant(0.1, tf.float32, [N]), name='B4')
    W5 = tf.Variable(v1.truncated_normal([N, 10], stddev=0.1), name='W5')
    B5 = tf.Variable(tf.constant(0.1, tf.float32, [10]), name='B5')

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

