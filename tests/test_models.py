"""The networks: shapes, parameter counts, losses, learning rates, one step down."""

import math
import re

from conftest import synthetic_batch
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import talk
from graph_mnist import training_graph

v1 = tf.compat.v1


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(patch, c_in, c_out):
    return patch * patch * c_in * c_out + c_out


# Counted by hand from the talk's slides, layer by layer.
PARAMETERS = {
    'softmax': dense(784, 10),  # "almost 8,000"
    'five_layers_sigmoid': dense(784, 200) + dense(200, 100) + dense(100, 60)
    + dense(60, 30) + dense(30, 10),
    'conv': conv(5, 1, 4) + conv(4, 4, 8) + conv(4, 8, 12) + dense(7 * 7 * 12, 200)
    + dense(200, 10),
    'conv_dropout': conv(6, 1, 6) + conv(5, 6, 12) + conv(4, 12, 24) + dense(7 * 7 * 24, 200)
    + dense(200, 10),
}
PARAMETERS['conv_bigger'] = PARAMETERS['conv_dropout']  # the same layers, no dropout
for name in ('five_layers_relu', 'five_layers_relu_lrdecay', 'five_layers_relu_lrdecay_dropout'):
    PARAMETERS[name] = PARAMETERS['five_layers_sigmoid']
# Batch norm: an offset per neuron instead of its bias (same count), a scale per neuron
# of the sigmoid network's four normalised layers.
PARAMETERS['batchnorm_five_layers_relu'] = PARAMETERS['five_layers_sigmoid']
PARAMETERS['batchnorm_five_layers_sigmoid'] = PARAMETERS['five_layers_sigmoid'] \
    + 200 + 100 + 60 + 30
PARAMETERS['batchnorm_conv'] = conv(6, 1, 24) + conv(5, 24, 48) + conv(4, 48, 64) \
    + dense(7 * 7 * 64, 200) + dense(200, 10)


def test_the_eight_networks_in_the_talks_order_then_the_batch_norm_chapter():
    assert talk.TALK == [
        'softmax', 'five_layers_sigmoid', 'five_layers_relu', 'five_layers_relu_lrdecay',
        'five_layers_relu_lrdecay_dropout', 'conv', 'conv_bigger', 'conv_dropout']
    assert talk.BEYOND == ['batchnorm_five_layers_sigmoid', 'batchnorm_five_layers_relu',
                             'batchnorm_conv']
    assert list(talk.NETWORKS) == talk.TALK + talk.BEYOND
    assert [talk.NETWORKS[n].iterations for n in talk.TALK] == [2000] + [10000] * 7
    assert [talk.NETWORKS[n].pkeep for n in talk.TALK] == [1, 1, 1, 1, 0.75, 1, 1, 0.75]
    assert [talk.NETWORKS[n].pkeep for n in talk.BEYOND] == [1, 1, 0.75]
    assert [talk.NETWORKS[n].plain for n in talk.BEYOND] == [
        'five_layers_sigmoid', 'five_layers_relu_lrdecay', 'conv_dropout']


@pytest.mark.parametrize('name', list(talk.NETWORKS))
def test_shapes_and_parameter_count(name):
    g = training_graph.build(name)
    assert g.X.shape.as_list() == [None, 28, 28, 1]
    assert g.Ylogits.shape.as_list() == [None, 10]
    assert g.parameters == PARAMETERS[name]
    with v1.Session(graph=g.graph) as sess:
        sess.run(g.init)
        Y = sess.run(g.Y, {g.X: np.zeros((3, 28, 28, 1), np.float32), g.pkeep: 1.0})
    assert Y.shape == (3, 10)
    np.testing.assert_allclose(Y.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize('name', list(talk.NETWORKS))
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(name):
    g = training_graph.build(name)
    X, Y_ = synthetic_batch()
    evaluate = {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: 0}
    with v1.Session(graph=g.graph) as sess:
        sess.run(g.init)
        before = sess.run(g.cross_entropy, evaluate)
        sess.run(g.train_step, {g.X: X, g.Y_: Y_, g.pkeep: g.spec.pkeep, g.step: 0})
        after = sess.run(g.cross_entropy, evaluate)
    assert after < before


def test_literal_and_stable_loss_agree_until_a_probability_underflows():
    graph = tf.Graph()
    with graph.as_default():
        logits = v1.placeholder(tf.float32, [None, 10])
        labels = v1.placeholder(tf.float32, [None, 10])
        literal = training_graph.cross_entropy(logits, labels, 'literal')
        stable = training_graph.cross_entropy(logits, labels, 'stable')
    one_hot = np.eye(10, dtype=np.float32)[[3, 7]]
    moderate = np.random.default_rng(0).normal(size=(2, 10)).astype(np.float32)
    extreme = moderate.copy()
    extreme[:, 0] = 200.0  # exp(-200) underflows to 0 in float32 for the other classes
    with v1.Session(graph=graph, config=training_graph.session_config('literal')) as sess:
        a, b = sess.run([literal, stable], {logits: moderate, labels: one_hot})
        np.testing.assert_allclose(a, b, rtol=1e-5)
        # by hand: mean over the batch of -log(softmax) at the right class, times 100
        log_softmax = moderate - np.log(np.exp(moderate).sum(1, keepdims=True))
        np.testing.assert_allclose(b, -log_softmax[[0, 1], [3, 7]].mean() * 100, rtol=1e-5)

        a, b = sess.run([literal, stable], {logits: extreme, labels: one_hot})
        assert math.isnan(a)  # 0 * log(0) = 0 * -inf = NaN: the talk's line
        assert np.isfinite(b) and b > 1000


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match='loss must be one of'):
        training_graph.build('softmax', loss='hinge')


def test_learning_rate_schedules():
    def rates(name, steps):
        g = training_graph.build(name)
        with v1.Session(graph=g.graph) as sess:
            return [sess.run(g.lr, {g.step: s}) for s in steps]

    np.testing.assert_allclose(rates('softmax', [0, 5000]), [0.005, 0.005])
    np.testing.assert_allclose(rates('five_layers_relu', [0, 5000]), [0.003, 0.003])
    np.testing.assert_allclose(rates('conv_dropout', [0, 2000, 10000]),
                               [0.0031, 0.0001 + 0.003 / math.e,
                                0.0001 + 0.003 * math.exp(-5)], rtol=1e-5)


def test_dropout_only_where_the_talk_put_it():
    """Dropout networks give different outputs for pkeep < 1 on the same input; the
    others (conv_bigger: conv_dropout's network trained with pkeep 1) ignore pkeep."""
    X, _ = synthetic_batch(n=20)
    for name, spec in talk.NETWORKS.items():
        g = training_graph.build(name)
        with v1.Session(graph=g.graph) as sess:
            sess.run(g.init)
            full = sess.run(g.Ylogits, {g.X: X, g.pkeep: 1.0})
            dropped = sess.run(g.Ylogits, {g.X: X, g.pkeep: 0.5})
        assert np.allclose(full, dropped) == (not spec.has_dropout), name
        assert spec.has_dropout == (spec.pkeep < 1 or name == 'conv_bigger'), name


def test_same_seed_same_initial_weights():
    def initial(seed):
        g = training_graph.build('conv', seed=seed)
        with v1.Session(graph=g.graph) as sess:
            sess.run(g.init)
            return sess.run(g.graph.get_collection('trainable_variables'))

    a, b, c = initial(1), initial(1), initial(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    # truncated normal, stddev 0.1: nothing beyond two standard deviations
    assert np.abs(a[0]).max() <= 0.2 and 0.05 < a[0].std() < 0.1


def test_building_leaves_eager_mode_alone():
    training_graph.build('softmax')
    assert tf.executing_eagerly()
    assert float(tf.constant(2.0) * 3) == 6.0


def _initial_values(g):
    with v1.Session(graph=g.graph) as sess:
        sess.run(g.init)
        return sess.run(g.weights + g.biases)


def test_conv_bigger_is_conv_dropout_without_dropout_from_the_same_initial_weights():
    bigger = training_graph.build('conv_bigger', seed=3)
    dropout = training_graph.build('conv_dropout', seed=3)
    for a, b in zip(_initial_values(bigger), _initial_values(dropout), strict=True):
        np.testing.assert_array_equal(a, b)
    assert bigger.spec.pkeep == 1.0 and dropout.spec.pkeep == 0.75
    X, Y_ = synthetic_batch(20)
    with v1.Session(graph=bigger.graph) as sess:  # pkeep 1: the training pass is deterministic
        sess.run(bigger.init)
        feed = {bigger.X: X, bigger.Y_: Y_, bigger.pkeep: bigger.spec.pkeep}
        assert sess.run(bigger.Ylogits, feed) == pytest.approx(sess.run(bigger.Ylogits, feed))


def test_fewer_layers_keep_the_first_hidden_layers():
    for layers, sizes in ((5, [784, 200, 100, 60, 30, 10]), (4, [784, 200, 100, 60, 10]),
                          (2, [784, 200, 10])):
        g = training_graph.build(talk.with_changes('five_layers_relu', layers=layers))
        assert [w.shape.as_list() for w in g.weights] == \
            [[m, n] for m, n in zip(sizes, sizes[1:])]
        assert [w.name for w in g.weights] == [f'W{i}:0' for i in range(1, layers + 1)]


def test_five_layers_are_the_talks_with_or_without_the_flag():
    plain, flagged = training_graph.build('five_layers_relu', seed=1), \
        training_graph.build(talk.with_changes('five_layers_relu', layers=5), seed=1)
    for a, b in zip(_initial_values(plain), _initial_values(flagged), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_experiments_change_the_settings_they_name():
    spec = talk.with_changes('five_layers_relu', learning_rate=0.01)
    assert spec.learning_rate == talk.ConstantRate(0.01)
    spec = talk.with_changes('conv', learning_rate=0.01)
    assert spec.learning_rate == talk.DecayingRate(start=0.01)  # period and floor kept
    assert talk.with_changes('conv_dropout', pkeep=0.5).pkeep == 0.5
    assert talk.with_changes('conv_bigger', pkeep=0.75).pkeep == \
        talk.NETWORKS['conv_dropout'].pkeep
    assert talk.describe_changes(talk.with_changes('conv_dropout', pkeep=0.5)) == \
        "pkeep 0.5 (the talk's: 0.75)"
    assert talk.describe_changes(talk.with_changes('conv')) == ''
    assert talk.with_changes('conv', learning_rate=0.01).changes == (('learning_rate', 0.01),)


@pytest.mark.parametrize('name, changes, says', [
    ('conv', {'pkeep': 0.5}, 'no dropout'),
    ('conv_dropout', {'pkeep': 0}, 'in (0, 1]'),
    ('conv_dropout', {'pkeep': 1.5}, 'in (0, 1]'),
    ('conv', {'layers': 3}, 'dense networks'),
    ('five_layers_relu', {'layers': 1}, '2, 3, 4 or 5'),
    ('softmax', {'learning_rate': -1.0}, 'above 0'),
])
def test_an_experiment_that_changes_nothing_or_is_out_of_range_is_refused(name, changes, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        talk.with_changes(name, **changes)


def test_bfloat16_support_is_read_from_the_cpus_flags(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 fma\n')
    assert training_graph.bfloat16_support(str(cpuinfo))
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512f fma\n')
    assert not training_graph.bfloat16_support(str(cpuinfo))
    assert not training_graph.bfloat16_support(str(tmp_path / 'none'))


def _ran(g, fetch):
    """{op type: count} of what a Session ran for `fetch` after Grappler, and the dtypes
    its Casts produced."""
    feed = {g.X: np.random.default_rng(0).random((8, 28, 28, 1), np.float32),
            g.Y_: np.eye(10, dtype=np.float32)[np.arange(8) % 10], g.pkeep: 1.0, g.step: 0}
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(graph=g.graph, config=g.config) as sess:
        sess.run(g.init)
        sess.run(fetch, feed, options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                 run_metadata=metadata)
    nodes = [node for graph in metadata.partition_graphs for node in graph.node]
    return {node.attr['DstT'].type for node in nodes if node.op == 'Cast'}


def test_bfloat16_is_the_same_graph_rewritten_before_it_runs():
    plain = training_graph.build('conv', seed=2)
    rewritten = training_graph.build('conv', seed=2, precision='bfloat16')
    assert plain.graph.as_graph_def() == rewritten.graph.as_graph_def()  # the talk's lines
    options = rewritten.config.graph_options.rewrite_options
    assert options.auto_mixed_precision_onednn_bfloat16 == options.ON
    assert plain.config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 \
        != options.ON
    bfloat16 = tf.bfloat16.as_datatype_enum
    assert bfloat16 not in _ran(plain, plain.train_step)
    if training_graph.bfloat16_support():  # where the CPU computes it, Grappler casts to it
        assert bfloat16 in _ran(rewritten, rewritten.train_step)
