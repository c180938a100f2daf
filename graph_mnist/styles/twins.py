"""The networks in other frameworks, for the benchmark and the lessons: their Keras 3
and PyTorch twins, built layer by layer from the network's description.

The description is read off the network's own graph (architecture.layers: layers, initial
values) and its Spec (optimizer, learning rate), so the network is written once, in
graph_mnist.models; it is plain data, so that a process without TensorFlow (PyTorch's)
can build a twin. tests/test_benchmark.py checks the twins layer by layer.
"""

import math
import types


def describe(model):
    """A network (its name, or a Spec with the talk's experiments applied) as its twins
    need it, read off its graph (architecture.layers) and its Spec: plain data, so that a
    process without TensorFlow can build a twin."""
    from graph_mnist import architecture
    from graph_mnist import models
    from graph_mnist import talk
    from graph_mnist import training_graph
    spec = talk.spec_of(model)
    rate = spec.learning_rate
    layers = architecture.layers(spec)
    return {'model': spec.name,
            'layers': [layer._asdict() for layer in layers],
            'optimizer': 'sgd' if spec.optimizer is talk.SGD else 'adam',
            'rate': {'kind': type(rate).__name__, **rate._asdict()},
            'loss_scale': training_graph.LOSS_SCALE, 'bn_epsilon': models.BN_EPSILON,
            'weight_stddev': next((layer.stddev for layer in layers if layer.stddev), None),
            'training_flops_per_image': architecture.training_flops_per_image(spec)}


def layers_of(description):
    """The description's layers as objects (kind, n_in, n_out, ..., out_size)."""
    return [types.SimpleNamespace(**layer, out_size=-(-layer['size'] // layer['stride']))
            for layer in description['layers']]


def rate_at(rate, step):
    """The learning rate of a description at a step, as a number (a process without
    TensorFlow cannot ask models' schedule: it is a graph op)."""
    if rate['kind'] == 'ConstantRate':
        return rate['rate']
    return rate['floor'] + rate['start'] * math.exp(-step / rate['period'])


def keras_learning_rate(rate):
    """A description's learning rate for Keras: a number, or a schedule."""
    import keras

    if rate['kind'] == 'ConstantRate':
        return rate['rate']

    class Decaying(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.cast(step, 'float32')
            return rate['floor'] + rate['start'] * keras.ops.exp(-step / rate['period'])

        def get_config(self):
            return dict(rate)

    return Decaying()


def keras_optimizer(description, our_loss=False):
    """A description's optimizer in Keras. our_loss: trained on our cross-entropy (the
    batch mean times loss_scale) with TensorFlow 1's Adam epsilon, as the graph is;
    else on Keras's (the batch mean), for which plain gradient descent needs a rate
    loss_scale times larger to take the same steps (Adam does not care about the scale)."""
    import keras
    rate = keras_learning_rate(description['rate'])
    if description['optimizer'] == 'sgd':
        return keras.optimizers.SGD(rate if our_loss else rate * description['loss_scale'])
    return keras.optimizers.Adam(rate, epsilon=1e-8) if our_loss else keras.optimizers.Adam(rate)


def keras_model(description, seed=0, jit_compile=False, steps_per_execution=1, loss=None):
    """The Keras twin of a network, layer by layer from its description.

    loss: None, Keras's categorical cross-entropy as a Keras user writes it (the
    benchmark's twin); or one of training_graph.LOSSES, our own cross-entropy (the batch mean
    times 100) and TensorFlow 1's Adam epsilon, so that the twin takes the same steps
    as the graph to float rounding (--style=keras)."""
    import keras
    keras.utils.set_random_seed(seed)
    stack = [keras.Input((28, 28, 1))]
    for layer in layers_of(description):
        if layer.kind == 'dropout':
            stack.append(keras.layers.Dropout(layer.rate))
            continue
        bias = keras.initializers.Constant(layer.bias)
        settings = dict(
            kernel_initializer=keras.initializers.Zeros() if layer.init == 'zeros' else
            keras.initializers.TruncatedNormal(stddev=description['weight_stddev'], seed=seed))
        settings.update(use_bias=False) if layer.batch_norm else \
            settings.update(activation=layer.activation, bias_initializer=bias)
        if layer.kind == 'conv':
            stack.append(keras.layers.Conv2D(layer.n_out, layer.patch, strides=layer.stride,
                                             padding='same', **settings))
        else:
            if not any(isinstance(made, keras.layers.Flatten) for made in stack[1:]):
                stack.append(keras.layers.Flatten())
            stack.append(keras.layers.Dense(layer.n_out, **settings))
        if layer.batch_norm:  # the offset takes the bias's place; a scale only if ours has one
            stack.append(keras.layers.BatchNormalization(
                epsilon=description['bn_epsilon'], scale=layer.scale, beta_initializer=bias))
            stack.append(keras.layers.Activation(layer.activation))
    net = keras.Sequential(stack)
    optimizer = keras_optimizer(description, our_loss=loss is not None)
    if loss is not None:
        from graph_mnist import training_graph
        net.compile(optimizer=optimizer, jit_compile=False,
                    loss=lambda Y_, Ylogits: training_graph.cross_entropy(Ylogits, Y_, loss))
        return net
    net.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'], jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
    return net


def torch_model(description, seed=0):
    """The PyTorch twin of a network, layer by layer from its description."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid}
    modules, flat = [], False
    for layer in layers_of(description):
        if layer.kind == 'dropout':
            modules.append(nn.Dropout(layer.rate))
            continue
        with_bias = not layer.batch_norm  # batch norm's offset takes the bias's place
        if layer.kind == 'conv':
            # TensorFlow's SAME padding: as much as the stride needs, the odd pixel after
            pad = max((layer.out_size - 1) * layer.stride + layer.patch - layer.size, 0)
            modules.append(nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)))
            weighted = nn.Conv2d(layer.n_in, layer.n_out, layer.patch, layer.stride,
                                 bias=with_bias)
            norm = nn.BatchNorm2d
        else:
            if not flat:
                modules.append(nn.Flatten())
                flat = True
            weighted = nn.Linear(layer.n_in, layer.n_out, bias=with_bias)
            norm = nn.BatchNorm1d
        with torch.no_grad():
            if layer.init == 'zeros':
                weighted.weight.zero_()
            else:
                std = description['weight_stddev']
                nn.init.trunc_normal_(weighted.weight, std=std, a=-2 * std, b=2 * std)
            if with_bias:
                weighted.bias.fill_(layer.bias)
        modules.append(weighted)
        if layer.batch_norm:
            normalise = norm(layer.n_out, eps=description['bn_epsilon'])
            with torch.no_grad():
                normalise.bias.fill_(layer.bias)
            normalise.weight.requires_grad_(layer.scale)  # no scale: stays 1, not trained
            modules.append(normalise)
        if layer.activation:
            modules.append(activations[layer.activation]())
    return nn.Sequential(*modules)
