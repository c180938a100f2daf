"""The same network three ways (--style=graph|function|keras): the same initial weights,
the same batches, the same steps; every feature of a run in every style."""

import json
import os

from conftest import run_module
from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import data
from graph_mnist import export
from graph_mnist import training
from graph_mnist import training_graph
from graph_mnist.styles import eager

v1 = tf.compat.v1


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((100, 28, 28, 1)).astype(np.float32),
             np.eye(10, dtype=np.float32)[rng.integers(0, 10, 100)]) for _ in range(n)]


def graph_losses(model, steps, seed=0):
    """The talk's loop: Session.run(train_step) on the given batches, the loss fetched
    with it (computed before the step's update)."""
    g = training_graph.build(model, seed=seed)
    with v1.Session(graph=g.graph, config=g.config) as sess:
        sess.run(g.init)
        return np.array([sess.run([g.train_step, g.cross_entropy],
                                  {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: i})[1]
                         for i, (X, Y_) in enumerate(steps)])


def style_losses(net, steps):
    return np.array([net.train_step(X, Y_, i) for i, (X, Y_) in enumerate(steps)])


@pytest.mark.parametrize('style', ['function', 'keras'])
def test_a_style_starts_from_the_graphs_initial_weights(style):
    net = eager.make(style, 'conv', seed=4)
    g = training_graph.build('conv', seed=4)
    with v1.Session(graph=g.graph) as sess:
        sess.run(g.init)
        graph_values = dict(zip([v.op.name for v in g.weights + g.biases],
                                sess.run(g.weights + g.biases)))
    values = net.values()
    assert list(values) == ['W1', 'B1', 'W2', 'B2', 'W3', 'B3', 'W4', 'B4', 'W5', 'B5']
    for name, value in graph_values.items():
        np.testing.assert_array_equal(values[name], value)


@pytest.mark.parametrize('model', ['five_layers_relu', 'conv'])
def test_with_the_talks_optimizer_tensorflow_2_takes_the_graphs_steps_bit_for_bit(model):
    """The network function, the loss, the gradients and the batches are the same: with
    the talk's own (tf.compat.v1) Adam, the tf.function's losses are the Session's."""
    steps = batches(20)
    np.testing.assert_array_equal(
        style_losses(eager.FunctionNet(model, optimizer='talk'), steps),
        graph_losses(model, steps))


def test_the_two_tensorflow_2_styles_take_the_same_steps_and_the_graphs_at_first():
    """Keras's Adam rounds its bias corrections differently from TensorFlow 1's, and
    Adam magnifies a rounding difference in a tiny gradient into a whole step; the
    first steps agree to float rounding, the two Keras-optimizer styles all along."""
    steps = batches(10)
    graph = graph_losses('five_layers_relu', steps)
    function = style_losses(eager.FunctionNet('five_layers_relu'), steps)
    keras = style_losses(eager.KerasNet('five_layers_relu'), steps)
    np.testing.assert_allclose(function, keras, rtol=1e-6)
    np.testing.assert_allclose(function[:3], graph[:3], rtol=1e-6)


def test_softmax_with_gradient_descent_agrees_in_every_style():
    steps = batches(20)
    graph = graph_losses('softmax', steps)
    for style in ('function', 'keras'):
        np.testing.assert_allclose(style_losses(eager.make(style, 'softmax'), steps), graph,
                                   rtol=1e-5)


@pytest.mark.slow  # three short runs per style
@pytest.mark.parametrize('style', ['function', 'keras'])
def test_a_run_in_a_style_keeps_its_books_stops_and_resumes_exactly(style, tmp_path):
    mnist = synthetic_mnist()
    config = training.Config('five_layers_relu_lrdecay', iterations=40, eval_every=10,
                             log_every=5, checkpoint_every=20, style=style, vis='none')
    whole = training.train(mnist, config, str(tmp_path / 'whole'))
    assert whole['style'] == style and whole['status'] == 'finished'
    assert whole['final_test_accuracy'] > 0.5 and len(whole['test']['step']) == 5
    assert whole['test']['weights'] and whole['test']['biases']  # the dashboard's spreads
    half = training.Config('five_layers_relu_lrdecay', iterations=20, eval_every=10,
                           log_every=5, checkpoint_every=20, style=style, vis='none')
    training.train(mnist, half, str(tmp_path / 'resumed'))
    resumed = training.train(mnist, config, str(tmp_path / 'resumed'), resume=True)
    assert resumed['train']['loss'] == pytest.approx(whole['train']['loss'], rel=1e-6)
    assert os.listdir(tmp_path / 'whole' / 'checkpoints')


@pytest.mark.slow  # a run, an export, a SavedModel loaded
@pytest.mark.parametrize('style', ['function', 'keras'])
def test_a_styles_run_exports_to_the_same_signatures(style, tmp_path):
    mnist = synthetic_mnist()
    config = training.Config('conv', iterations=10, eval_every=10, log_every=10, style=style,
                             vis='none')
    history = training.train(mnist, config, str(tmp_path / 'run'))
    _, _, directory = export.export(str(tmp_path / 'run'), str(tmp_path / 'exported'))
    loaded = tf.saved_model.load(directory)
    assert set(loaded.signatures) == {'serving_default', 'from_image'}
    images = mnist.test_images[:50]
    served = loaded.signatures['serving_default'](images=tf.constant(images))
    digits = served['digit'].numpy()
    assert (digits == mnist.test_digits[:50]).mean() == pytest.approx(
        history['final_test_accuracy'], abs=0.2)
    net = eager.make(style, 'conv')  # the exported weights are the run's, not fresh ones
    net.restore(v1.train.latest_checkpoint(str(tmp_path / 'run' / 'checkpoints')))
    np.testing.assert_allclose(served['probabilities'].numpy(),
                               tf.nn.softmax(net.logits(images)).numpy(), atol=1e-5)


@pytest.mark.parametrize('settings, says', [
    (dict(model='batchnorm_conv', style='keras'), 'moving averages in TensorFlow 1 graph'),
    (dict(model='conv', style='function', steps_per_run=10, log_every=10, eval_every=10,
          checkpoint_every=10), 'has no Session loop'),
])
def test_what_a_style_cannot_do_is_one_clear_message(settings, says):
    with pytest.raises(training.SettingsError, match=says):
        training.Config(**settings)


def test_a_cluster_trains_the_graph_style_only():
    from graph_mnist import distributed
    task = distributed.Task({'chief': ['127.0.0.1:1'], 'worker': ['127.0.0.1:2'],
                             'ps': ['127.0.0.1:3']}, 'worker', 0)
    with pytest.raises(distributed.ClusterError, match='--style=keras is for one machine'):
        distributed.build(task, training.Config('conv', style='keras', vis='none'))


@pytest.mark.slow  # three commands on real MNIST
def test_the_three_styles_on_the_command_line(tmp_path, mnist_dir):
    """The issue's check: five_layers_relu, 50 steps, seed 0, each style's history."""
    losses = {}
    for style in eager.STYLES:
        workdir = tmp_path / style
        result = run_module('graph_mnist.train', '--model=five_layers_relu', f'--style={style}',
                            '--log_every=1', '--iterations=50', '--vis=none',
                            f'--data_dir={mnist_dir}', f'--workdir={workdir}')
        assert result.returncode == 0, result.stderr
        history = json.load(open(workdir / 'history.json'))
        assert history['style'] == style and len(history['train']['loss']) == 50
        losses[style] = np.array(history['train']['loss'])
    np.testing.assert_allclose(losses['function'], losses['keras'], rtol=1e-6)
    np.testing.assert_allclose(losses['function'][:3], losses['graph'][:3], rtol=1e-6)
    mnist = data.load(mnist_dir, log=lambda m: None)
    steps = [data.Batches(mnist.train_images, mnist.train_labels, 100, 0)(i) for i in range(50)]
    talk = style_losses(eager.FunctionNet('five_layers_relu', optimizer='talk'), steps)
    np.testing.assert_allclose(talk, losses['graph'], rtol=1e-6)  # measured, as the books do


@pytest.mark.slow  # nine nets built and traced
@pytest.mark.parametrize('style', ['function', 'keras'])
def test_same_seed_same_dropout_masks_in_a_style(style):
    steps = batches(3)
    first, again, other = (style_losses(eager.make(style, 'five_layers_relu_lrdecay_dropout',
                                                   seed=s), steps) for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_three_loops_are_printed_side_by_side_from_the_source():
    from graph_mnist import today
    loops = today.three_loops()
    assert list(loops) == list(eager.STYLES)
    assert 'sess.run([g.train_step' in loops['graph']
    assert 'net.train_step(batch_X, batch_Y, step)' in loops['function']
    assert '.fit(dataset' in loops['keras'] and 'keras.callbacks.Callback' in loops['keras']
    assert all(len(source.splitlines()) <= 40 for source in loops.values())
    styles_page = open(os.path.join(os.path.dirname(__file__), '..', 'docs', 'styles.md')).read()
    assert today.three_loops_html() in styles_page  # docs/styles.md prints today's source
