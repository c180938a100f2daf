"""The layers of a network, read off its own graph: the network functions
(graph_mnist.models) are the only description of a network; the benchmark's Keras and
PyTorch twins, its operation count, FLOPs and the README's table all come from here."""

from typing import NamedTuple

import tensorflow as tf

from graph_mnist import talk

v1 = tf.compat.v1


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
    stddev: float = None  # the weights' truncated normal's
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


def layers(model):
    """A network (its name, or a Spec with the talk's experiments applied) as a list of
    Layers, read off its own graph."""
    spec = talk.spec_of(model)
    graph = tf.Graph()
    with graph.as_default():
        spec.logits(v1.placeholder(tf.float32, [None, 28, 28, 1]), v1.placeholder(tf.float32),
                    v1.placeholder(tf.bool), v1.placeholder(tf.int32))
        initial = {v.op.name: v.initial_value for v in v1.global_variables()}
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
        init, stddev = 'zeros', None
        if tf.get_static_value(initial[W]) is None:  # truncated_normal(shape) * stddev + 0
            init = 'truncated_normal'
            stddev = round(float(tf.get_static_value(initial[W].op.inputs[0].op.inputs[1])), 6)
        bias = round(float(tf.get_static_value(initial[B]).flat[0]), 6)  # float32 0.1 -> 0.1
        common = dict(activation=activation, init=init, stddev=stddev, bias=bias,
                      batch_norm=normalised,
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


def forward_macs(model):
    """Multiply-adds of one image's forward pass through a network (name or Spec)."""
    return sum(layer.macs for layer in layers(model))


def training_flops_per_image(model):
    """FLOPs of one image's training step: 2 per multiply-add, x 3 for forward then
    backward (gradients with respect to the activations and to the weights, each as
    costly as the forward pass). Biases, activations, softmax and the optimizer's
    updates are left out (a few % at most)."""
    return 3 * 2 * forward_macs(model)
