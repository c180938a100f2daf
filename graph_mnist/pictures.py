"""The talk's teaching points drawn from a trained run's own tensors, for talk.ipynb.

    from graph_mnist import pictures
    pictures.filters(workdir)                # the first layer's trained filters, W1
    pictures.feature_maps(workdir, image)    # one digit through Y1, Y2, Y3
    pictures.sigmoid_slopes(workdir, images) # what the sigmoid's derivative lets through
    print(pictures.parameter_table('conv_dropout'))  # where the weights and neurons are

Each reads the run's latest checkpoint into its network rebuilt for inference
(graph_mnist.export.inference_graph: dropout off) in a graph and a Session of its own,
runs the tensors it shows, and returns a PNG picture (IPython's Image: a notebook shows
it as the cell's value) or, for the counts, a table as text.
"""

import contextlib
import io

import numpy as np
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import export
from graph_mnist import runs
from graph_mnist.errors import UserError

v1 = tf.compat.v1


class PicturesError(UserError):
    """The run cannot be drawn; the message says why."""


@contextlib.contextmanager
def restored(workdir):
    """(net, sess): the run's network for inference, its latest checkpoint restored."""
    history = runs.read_history(workdir)
    found = checkpoints.latest(workdir)
    if found is None:
        raise PicturesError(f'{workdir} holds no checkpoint: train the network first')
    net = export.inference_graph(history['model'], history.get('layers'))
    with net.graph.as_default(), v1.Session(graph=net.graph) as sess:
        checkpoints.restore(sess, net.saver, found[0])
        yield net, sess


def layer_outputs(graph, op_type):
    """The outputs of the graph's `op_type` operations in the order they were made: for
    the talk's networks, Relu gives Y1, Y2, ... and Sigmoid the hidden layers Y1-Y4."""
    return [op.outputs[0] for op in graph.get_operations() if op.type == op_type]


def variables(graph):
    """{name: tf.Variable} of the graph's trained variables: W1, B1, ..."""
    return {v.op.name: v for v in graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES)}


def png(figure):
    from IPython.display import Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return Image(data=buffer.getvalue(), format='png')


def new_figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=80)


def filters(workdir):
    """The first convolutional layer's trained filters (W1 [h, w, 1, K]), one small
    picture each: red where the filter adds the pixel's ink, blue where it subtracts it."""
    with restored(workdir) as (net, sess):
        W1 = variables(net.graph).get('W1')
        if W1 is None or W1.shape.rank != 4:
            raise PicturesError(f'{runs.read_history(workdir)["model"]} has no '
                                f'convolutional layer')
        W1 = sess.run(W1)
    K = W1.shape[-1]
    figure = new_figure(1.3 * K, 1.7)
    limit = np.abs(W1).max()
    for k, ax in enumerate(figure.subplots(1, K, squeeze=False)[0]):
        ax.imshow(W1[:, :, 0, k], cmap='bwr', vmin=-limit, vmax=limit)
        ax.set_title(f'filter {k + 1}', fontsize=9)
        ax.set_axis_off()
    figure.suptitle(f'W1 {list(W1.shape)}: the trained {W1.shape[0]}x{W1.shape[1]} filters',
                    fontsize=10)
    return png(figure)


def layer_maps(workdir, image):
    """[Y1, Y2, Y3] of the trained network on one digit [28, 28(, 1)]: the outputs of its
    convolutional layers (the ReLUs with a height and a width), [1, h, w, channels] each."""
    with restored(workdir) as (net, sess):
        outputs = [t for t in layer_outputs(net.graph, 'Relu') if t.shape.rank == 4]
        if not outputs:
            raise PicturesError('this network has no convolutional layer')
        return sess.run(outputs, {net.X: np.reshape(image, (1, 28, 28, 1))})


def feature_maps(workdir, image):
    """One digit [28, 28(, 1)] and what the convolutional layers make of it: every
    channel of Y1, Y2 and Y3, one row a layer."""
    maps = layer_maps(workdir, image)
    columns = max(m.shape[-1] for m in maps)
    figure = new_figure(columns * 0.5, 0.62 * (1 + len(maps)))
    axes = figure.subplots(1 + len(maps), columns, squeeze=False)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.01, wspace=0.08,
                           hspace=0.4)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(np.reshape(image, (28, 28)), cmap='gray_r')
    axes[0, 1].text(0, 0.5, 'the digit, then Y1, Y2, Y3: one row a layer, one picture a '
                    'channel (dark: large values)', fontsize=9, va='center')
    for row, values in enumerate(maps, start=1):
        for c in range(values.shape[-1]):
            axes[row, c].imshow(values[0, :, :, c], cmap='gray_r', interpolation='nearest')
        axes[row, 0].set_title(f'Y{row} {values.shape[1]}x{values.shape[2]}', fontsize=8,
                               loc='left')
    return png(figure)


def sigmoid_derivative(x):
    """The sigmoid and its derivative at x, as TensorFlow differentiates it (the Sigmoid
    op's registered gradient), in a graph of its own."""
    graph = tf.Graph()
    with graph.as_default():
        X = tf.constant(np.asarray(x, np.float32))
        Y = tf.sigmoid(X)
        dY, = tf.gradients(Y, X)
        with v1.Session(graph=graph) as sess:
            return sess.run([Y, dY])


def hidden_slopes(workdir, images):
    """{layer name: the sigmoid's derivative y (1 - y) at each of its neurons and images}
    for a trained sigmoid network's hidden layers, on `images`."""
    with restored(workdir) as (net, sess):
        hidden = layer_outputs(net.graph, 'Sigmoid')
        if not hidden:
            raise PicturesError('this network has no sigmoid layer')
        values = sess.run(hidden, {net.X: np.reshape(images, (-1, 28, 28, 1))})
    return {f'Y{i}': (y * (1 - y)).ravel() for i, y in enumerate(values, start=1)}


def sigmoid_slopes(workdir, images):
    """Left: the sigmoid and its derivative, never above 0.25. Right: the derivative at
    the trained network's hidden neurons on `images`, layer by layer: backpropagation
    multiplies the gradient by it at every layer it passes back through."""
    x = np.linspace(-8, 8, 321)
    y, dy = sigmoid_derivative(x)
    slopes = hidden_slopes(workdir, images)
    figure = new_figure(10, 3.2)
    left, right = figure.subplots(1, 2)
    left.plot(x, y, label='sigmoid(x)')
    left.plot(x, dy, label="its derivative (TensorFlow's gradient)")
    left.axhline(0.25, color='grey', lw=0.6, ls='--')
    left.set(xlabel='x', title='the sigmoid: its slope is 0.25 at most')
    left.legend(fontsize=8)
    right.boxplot(list(slopes.values()), whis=(5, 95), showfliers=False)
    right.set_xticks(range(1, len(slopes) + 1), [
        f'{name}\nmean {values.mean():.3f}' for name, values in slopes.items()])
    right.set(ylim=(0, 0.26), title='the derivative at the trained hidden neurons')
    for ax in (left, right):
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return png(figure)


def parameters(model):
    """(weights' name, shape, weights with its biases, neurons) of each layer of `model`,
    read from its graph: a layer's neurons are the outputs of the matrix multiplication
    or convolution its weights feed (one per position and channel in a convolution)."""
    graph = export.inference_graph(model).graph
    found = variables(graph)
    rows = []
    for name, W in found.items():
        if not name.startswith('W'):
            continue
        B = found[f'B{name[1:]}']
        layer = next(op for read in W.op.outputs[0].consumers() if read.type == 'ReadVariableOp'
                     for op in read.outputs[0].consumers() if op.type in ('MatMul', 'Conv2D'))
        rows.append((name, W.shape.as_list(), W.shape.num_elements() + B.shape.num_elements(),
                     layer.outputs[0].shape[1:].num_elements()))
    return rows


def parameter_table(model):
    """parameters(model) as a table, with each layer's share of the weights."""
    rows = parameters(model)
    total = sum(weights for _, _, weights, _ in rows)
    lines = [f'{"layer":18} {"weights and biases":>19} {"share":>7} {"neurons":>8}']
    for name, shape, weights, neurons in rows:
        lines.append(f'{name + " " + str(shape):18} {weights:>19,} {weights / total:>7.1%} '
                     f'{neurons:>8,}')
    lines.append(f'{"all":18} {total:>19,} {1:>7.0%} '
                 f'{sum(neurons for *_, neurons in rows):>8,}')
    return '\n'.join(lines)
