"""Stop, resume, damaged checkpoints; export to a SavedModel and load it back."""

import glob
import os
import signal
import subprocess
import sys
import time

from conftest import run_module
from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import export
from graph_mnist import runs
from graph_mnist import training
from graph_mnist import training_graph

v1 = tf.compat.v1


def stop_at(step):
    """A stop_requested that says yes when polled for the `step`-th time (0-based)."""
    calls = iter(range(10 ** 9))
    return lambda: next(calls) == step


def assert_continuous(history, log_every, eval_every, last):
    assert history['train']['step'] == list(range(0, last, log_every))
    assert history['test']['step'] == list(range(0, last, eval_every)) + [last]


def test_stop_then_resume_is_one_continuous_run(tmp_path):
    mnist, workdir = synthetic_mnist(), str(tmp_path)
    config = training.Config('conv_dropout', iterations=50, eval_every=10, log_every=5,
                          checkpoint_every=20, vis='none')
    with pytest.raises(training.Interrupted) as stopped:
        training.train(mnist, config, workdir, stop_requested=stop_at(33))
    assert stopped.value.step == 33
    assert runs.read_history(workdir)['status'] == 'interrupted'
    path, step, saved = checkpoints.latest(workdir)
    assert step == 33 and path.endswith('model.ckpt-33')
    # the checkpoint's history claims no step it does not hold
    assert max(saved['train']['step']) < 33 and max(saved['test']['step']) < 33

    history = training.train(mnist, config, workdir, resume=True)
    assert history['status'] == 'finished'
    assert_continuous(history, 5, 10, 50)
    assert history['test']['time'] == sorted(history['test']['time'])
    assert checkpoints.latest(workdir)[1] == 50

    with pytest.raises(training.TrainingError, match='already trained 50 steps'):
        training.train(mnist, config, workdir, resume=True)


def test_resume_restores_the_weights_of_the_checkpoint(tmp_path):
    """Uninterrupted and stopped-then-resumed runs of a network without dropout (whose
    only randomness is the initialisation and the data order) end identical."""
    mnist = synthetic_mnist()
    config = training.Config('five_layers_relu_lrdecay', iterations=40, eval_every=10,
                          log_every=10, checkpoint_every=100, vis='none')
    whole = training.train(mnist, config, str(tmp_path / 'whole'))
    with pytest.raises(training.Interrupted):
        training.train(mnist, config, str(tmp_path / 'parts'), stop_requested=stop_at(17))
    parts = training.train(mnist, config, str(tmp_path / 'parts'), resume=True)
    assert parts['test']['accuracy'] == whole['test']['accuracy']
    assert parts['train']['loss'] == pytest.approx(whole['train']['loss'], rel=1e-5)


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(training.TrainingError, match='no checkpoint'):
        training.train(synthetic_mnist(), training.Config('softmax', iterations=10, vis='none'),
                       str(tmp_path), resume=True)


def test_damaged_checkpoint_is_detected_with_a_clear_message(tmp_path):
    mnist, workdir = synthetic_mnist(), str(tmp_path)
    with pytest.raises(training.Interrupted):
        training.train(mnist, training.Config('softmax', iterations=30, vis='none'),
                    workdir=workdir, stop_requested=stop_at(12))
    data_file, = glob.glob(os.path.join(workdir, 'checkpoints', 'model.ckpt-12.data-*'))
    with open(data_file, 'r+b') as f:
        f.truncate(os.path.getsize(data_file) // 2)
    with pytest.raises(checkpoints.CheckpointError, match='model.ckpt-12 cannot be loaded'):
        training.train(mnist, training.Config('softmax', iterations=30, vis='none'), workdir,
                       resume=True)


def test_resume_with_another_model_is_refused(tmp_path, mnist_dir):
    with pytest.raises(training.Interrupted):
        training.train(synthetic_mnist(), training.Config('softmax', iterations=20, vis='none'),
                       str(tmp_path), stop_requested=stop_at(5))
    result = run_module('graph_mnist.train', '--resume', '--model=conv',
                        f'--workdir={tmp_path}', f'--data_dir={mnist_dir}')
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert 'it was trained with --model=softmax' in result.stderr


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, mnist_dir):
    workdir = tmp_path / 'run'
    process = subprocess.Popen(
        [sys.executable, '-m', 'graph_mnist.train', '--model=five_layers_relu',
         '--vis=none', f'--workdir={workdir}', f'--data_dir={mnist_dir}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training is under way
        try:
            if len(runs.read_history(str(workdir))['test']['step']) >= 3:
                break
        except runs.WorkdirError:
            pass
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert 'SIGINT: saving a checkpoint and stopping' in stderr
    assert 'python -m graph_mnist.train --resume --workdir=' in stderr
    assert 'Traceback' not in stderr
    path, step, _ = checkpoints.latest(str(workdir))
    assert 200 <= step < 10000
    assert runs.read_history(str(workdir))['status'] == 'interrupted'


# --------------------------------------------------------------------------- export


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('run'))
    mnist = synthetic_mnist()
    config = training.Config('conv_dropout', iterations=40, eval_every=20, log_every=20,
                             vis='none')
    history = training.train(mnist, config,
                          workdir=workdir)
    return mnist, workdir, history


def test_export_then_load_gives_the_training_graphs_predictions(trained, tmp_path):
    mnist, workdir, history = trained
    export_dir = str(tmp_path / 'exported')
    model, step, version = export.export(workdir, export_dir)
    assert (model, step, version) == ('conv_dropout', 40, os.path.join(export_dir, '1'))

    serve = tf.saved_model.load(version).signatures['serving_default']
    out = serve(images=tf.constant(mnist.test_images))
    exported_p, exported_digits = out['probabilities'].numpy(), out['digit'].numpy()

    g = training_graph.build('conv_dropout')
    sess = v1.Session(graph=g.graph)
    checkpoints.restore(sess, g.saver, checkpoints.latest(workdir)[0])
    trained_p = sess.run(g.Y, {g.X: mnist.test_images, g.pkeep: 1.0})
    sess.close()
    np.testing.assert_array_equal(exported_digits, trained_p.argmax(1))
    np.testing.assert_allclose(exported_p, trained_p, atol=1e-6)
    accuracy = (exported_digits == mnist.test_digits).mean()
    assert accuracy == pytest.approx(history['final_test_accuracy'], abs=1e-6)


def test_each_export_is_the_next_version_of_the_base_path(trained, tmp_path):
    _, workdir, _ = trained
    base = str(tmp_path / 'exported')
    os.makedirs(os.path.join(base, 'notes'))  # not a number: skipped, as by TF Serving
    assert export.export(workdir, base)[2] == os.path.join(base, '1')
    assert export.export(workdir, base)[2] == os.path.join(base, '2')
    assert sorted(os.listdir(base)) == ['1', '2', 'notes']  # no partial directory left
    assert export.resolve(base) == os.path.join(base, '2')  # the newest
    assert export.resolve(os.path.join(base, '1')) == os.path.join(base, '1')
    with pytest.raises(export.ExportError, match='no numbered version'):
        export.resolve(str(tmp_path / 'nothing'))


def test_the_savedmodel_refuses_images_outside_0_1(trained, tmp_path):
    _, workdir, _ = trained
    serve = tf.saved_model.load(export.export(workdir, str(tmp_path))[2]).signatures[
        'serving_default']
    for bad in (2.0, -0.5, float('nan')):
        images = np.zeros((3, 28, 28, 1), np.float32)
        images[1, 5, 5, 0] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match=r'in \[0, 1\]'):
            serve(images=tf.constant(images))


def test_export_refuses_what_it_cannot_do(trained, tmp_path):
    _, workdir, _ = trained
    old = tmp_path / 'old'  # the single-directory layout of earlier exports
    old.mkdir()
    (old / 'saved_model.pb').write_bytes(b'')
    with pytest.raises(export.ExportError, match='is a SavedModel itself'):
        export.export(workdir, str(old))
    with pytest.raises(runs.WorkdirError, match='no readable training run'):
        export.export(str(tmp_path / 'nothing'), str(tmp_path / 'out'))


@pytest.mark.slow  # a process of its own
def test_export_command_refuses_a_missing_run_in_one_line(tmp_path):
    result = run_module('graph_mnist.export', f'--workdir={tmp_path / "nothing"}',
                        f'--export_dir={tmp_path / "out"}')
    assert result.returncode == 1 and 'no readable training run' in result.stderr
