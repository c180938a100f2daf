"""The experiments that write one of the talk's idioms another way (graph_mnist.rewrite):
--bias=bias_add and --batch_norm=fused compute what the literal lines compute, with the
same variables, and put the ops they promise in the graph."""

from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import rewrite
from graph_mnist import talk
from graph_mnist import training
from graph_mnist import training_graph

v1 = tf.compat.v1


def built(model, seed=0, **changes):
    """(graph, ops by type, Session with the initial values, g) of a training graph."""
    g = training_graph.build(talk.with_changes(model, **changes), seed=seed)
    sess = v1.Session(graph=g.graph)
    sess.run(g.init)
    types = {}
    for op in g.graph.get_operations():
        types[op.type] = types.get(op.type, 0) + 1
    return g, types, sess


@pytest.mark.parametrize('model', ['softmax', 'five_layers_relu', 'conv'])
def test_bias_add_computes_the_talks_sum_with_the_same_variables(model):
    images = synthetic_mnist(n_test=50).test_images
    outputs, weights, kinds = [], [], []
    for bias in (None, 'bias_add'):
        g, types, sess = built(model, bias=bias)
        with g.graph.as_default():
            values = sess.run(v1.trainable_variables())
        weights.append(values)
        outputs.append(sess.run(g.Ylogits, {g.X: images, g.pkeep: 1.0}))
        kinds.append(types)
    for a, b in zip(*weights):  # same variables, same initial values for a seed
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    layers = {'softmax': 1, 'five_layers_relu': 5, 'conv': 5}[model]
    assert kinds[0].get('BiasAdd', 0) == 0 and kinds[1]['BiasAdd'] == layers
    assert kinds[1].get('BiasAddGrad') == layers  # the bias gradient the fusion needs


def test_fused_batch_norm_normalises_as_moments_does():
    images = synthetic_mnist(n_test=100).test_images
    found = {}
    for batch_norm in ('moments', 'fused'):
        g, types, sess = built('batchnorm_conv', batch_norm=batch_norm)
        training_mode = {g.X: images, g.pkeep: 1.0, g.tst: False}
        found[batch_norm] = (sess.run(g.Ylogits, training_mode),
                             sess.run(g.Ylogits, {**training_mode, g.tst: True}), types)
    np.testing.assert_allclose(found['moments'][0], found['fused'][0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(found['moments'][1], found['fused'][1], rtol=1e-3, atol=1e-3)
    assert 'FusedBatchNormV3' in found['fused'][2]
    assert 'FusedBatchNormV3' not in found['moments'][2]


def test_the_experiments_are_refused_where_they_change_nothing():
    with pytest.raises(training.SettingsError, match='--batch_norm is for the batch norm'):
        training.Config('conv', batch_norm='fused', vis='none')
    with pytest.raises(training.SettingsError, match='--style=keras builds Keras layers'):
        training.Config('conv', bias='bias_add', style='keras', vis='none')
    config = training.Config('conv_dropout', bias='bias_add', vis='none')
    assert config.spec.changes == (('bias', 'bias_add'),) and config.spec.has_dropout
    assert talk.describe_changes(config.spec) == 'biases by tf.nn.bias_add (the talk\'s: + B)'
    assert rewrite.networks() is talk.models  # the default is the talk's own module


def test_explain_code_shows_the_lines_an_experiment_writes_otherwise():
    from graph_mnist import steps
    changed = steps.rewritten('conv_dropout', bias='bias_add')
    removed = [line for line in changed.splitlines() if line.startswith('-    ')]
    added = [line for line in changed.splitlines() if line.startswith('+    ')]
    assert len(removed) == len(added) == 5  # Y1, Y2, Y3, Y4, Ylogits: nothing else
    assert all('+ B' in line for line in removed) and all('bias_add' in line for line in added)
    assert 'batchnorm_fused(' in steps.rewritten('batchnorm_conv', batch_norm='fused')
    assert steps.rewritten('conv', batch_norm='fused') == ''  # no batch norm in it
