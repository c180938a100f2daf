"""Batch normalisation (beyond the talk), on small generated data: what the statistics
are in training and in testing, when the moving averages move, and that checkpoints and
the export carry them."""

from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import data
from graph_mnist import export
from graph_mnist import models
from graph_mnist import predict
from graph_mnist import training
from graph_mnist import training_graph

v1 = tf.compat.v1


@pytest.mark.parametrize('shape, convolutional', [((100, 7), False), ((8, 5, 5, 3), True)])
def test_training_mode_output_has_mean_0_and_variance_1_per_neuron(shape, convolutional):
    rng = np.random.default_rng(0)
    values = (rng.normal(3.0, 5.0, shape) * rng.uniform(0.5, 4, shape[-1])).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        Ylogits = tf.constant(values)
        offset = tf.zeros([shape[-1]])  # before offset and scale: offset 0, no scale
        Ybn = models.batchnorm(Ylogits, tf.constant(False), tf.constant(0), offset,
                               convolutional=convolutional)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            out = sess.run(Ybn)
    axes = (0, 1, 2) if convolutional else (0,)  # one neuron: one channel
    np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=axes), 1, atol=1e-3)
    assert not np.allclose(values.mean(axis=axes), 0)  # it did normalise something


def moving_averages(g, sess):
    with g.graph.as_default():
        shadows = [v for v in v1.global_variables() if 'ExponentialMovingAverage' in v.name]
    return dict(zip([v.op.name for v in shadows], sess.run(shadows)))


@pytest.fixture(scope='module')
def trained():
    """batchnorm_conv after 20 training steps on the generated squares."""
    mnist = synthetic_mnist(n_test=100)
    g = training_graph.build('batchnorm_conv')
    sess = v1.Session(graph=g.graph, config=g.config)
    sess.run(g.init)
    batches = data.Batches(mnist.train_images, mnist.train_labels, 50, 0)
    for step in range(20):
        batch_X, batch_Y = batches(step)
        sess.run(g.train_step, {g.X: batch_X, g.Y_: batch_Y, g.pkeep: 1.0, g.step: step})
    yield g, sess, mnist
    sess.close()


def test_evaluation_uses_the_averages_whatever_the_batch(trained):
    g, sess, mnist = trained
    images = mnist.test_images[:100]
    together = sess.run(g.Y, g.test_feed(images))
    alone = np.concatenate([sess.run(g.Y, g.test_feed(images[i:i + 1])) for i in (0, 1, 57)])
    np.testing.assert_allclose(alone, together[[0, 1, 57]], atol=1e-5)
    # training mode, by contrast, normalises with the batch's own statistics
    batch_mode = {g.X: images[:1], g.pkeep: 1.0}
    assert not np.allclose(sess.run(g.Y, batch_mode), together[:1], atol=1e-3)


def test_only_a_training_step_moves_the_averages(trained):
    g, sess, mnist = trained
    before = moving_averages(g, sess)
    assert len(before) == 2 * 4  # mean and variance of each of the four normalised layers
    sess.run([g.accuracy, g.cross_entropy], g.test_feed(mnist.test_images, mnist.test_labels))
    sess.run([g.accuracy, g.cross_entropy],  # the display line: training batch, pkeep 1
             {g.X: mnist.train_images[:50], g.Y_: mnist.train_labels[:50], g.pkeep: 1.0,
              g.step: 20})
    unchanged = moving_averages(g, sess)
    assert all(np.array_equal(before[k], unchanged[k]) for k in before)
    sess.run(g.train_step, {g.X: mnist.train_images[:50], g.Y_: mnist.train_labels[:50],
                            g.pkeep: 1.0, g.step: 20})
    after = moving_averages(g, sess)
    assert all(not np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.slow  # trains, stops, resumes and exports
def test_resume_restores_the_saved_averages_and_export_scores_what_the_run_scored(tmp_path):
    mnist, workdir = synthetic_mnist(n_test=100), str(tmp_path / 'run')
    config = training.Config('batchnorm_five_layers_sigmoid', iterations=30, eval_every=10,
                          log_every=10, checkpoint_every=100, vis='none')
    stops = iter([False] * 12 + [True])
    with pytest.raises(training.Interrupted):
        training.train(mnist, config, workdir, stop_requested=lambda: next(stops))
    path, step, _ = checkpoints.latest(workdir)
    saved = {name: tf.train.load_checkpoint(path).get_tensor(name)
             for name, _ in tf.train.list_variables(path) if 'ExponentialMovingAverage' in name
             and 'Adam' not in name}
    assert step == 12 and len(saved) == 2 * 4

    g = training_graph.build(config.model)
    with v1.Session(graph=g.graph, config=g.config) as sess:
        checkpoints.restore(sess, g.saver, path)
        restored = moving_averages(g, sess)
    assert restored.keys() == saved.keys()
    assert all(np.array_equal(saved[k], restored[k]) for k in saved)

    history = training.train(mnist, config, workdir, resume=True)
    export_dir = str(tmp_path / 'exported')
    export.export(workdir, export_dir)
    probabilities, digits = predict.Predictor(export_dir)(mnist.test_images)
    assert (digits == mnist.test_digits).mean() == \
        pytest.approx(history['final_test_accuracy'], abs=1e-6)
    g = training_graph.build(config.model)
    with v1.Session(graph=g.graph, config=g.config) as sess:
        checkpoints.restore(sess, g.saver, checkpoints.latest(workdir)[0])
        np.testing.assert_allclose(probabilities, sess.run(g.Y, g.test_feed(mnist.test_images)),
                                   atol=1e-5)
