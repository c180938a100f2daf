"""The training loop on small generated data: history, determinism, NaN, workdirs."""

import dataclasses
import json
import os

from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import runs
from graph_mnist import training


def test_history_records_the_talks_curves(tmp_path):
    config = training.Config('five_layers_relu_lrdecay', iterations=60, eval_every=25,
                             log_every=10, vis='none')
    history = training.train(synthetic_mnist(), config,
                          workdir=str(tmp_path))
    assert history['status'] == 'finished'
    assert history['device'] == training.device()  # 'CPU', or the first GPU's name
    assert history['train']['step'] == [0, 10, 20, 30, 40, 50]
    assert history['test']['step'] == [0, 25, 50, 60]  # and always at the end
    assert history['test']['epoch'] == [0, 25 / 6, 50 / 6, 10]
    assert history['train']['lr'][0] == pytest.approx(0.0031)
    assert history['train']['lr'][-1] < history['train']['lr'][0]  # decaying
    assert history['final_test_accuracy'] == history['test']['accuracy'][-1]
    assert history['max_test_accuracy'] == max(history['test']['accuracy'])
    assert history['final_test_accuracy'] > 0.9  # the squares are easy
    assert history['test']['loss'][-1] < history['test']['loss'][0]
    times = history['test']['time']
    assert times == sorted(times) and history['wall_time'] >= times[-1]
    assert json.load(open(tmp_path / runs.HISTORY)) == json.loads(json.dumps(history))


def test_same_seed_same_numbers_other_seed_other_numbers():
    def run(seed):
        config = training.Config('conv_dropout', iterations=20, seed=seed, eval_every=10,
                              log_every=5, vis='none')
        return training.train(synthetic_mnist(), config)

    a, b, c = run(3), run(3), run(4)
    assert a['train']['loss'] == b['train']['loss']
    assert a['test']['accuracy'] == b['test']['accuracy']
    assert a['train']['loss'] != c['train']['loss']


def test_literal_loss_stops_at_nan_keeping_the_history(tmp_path):
    # Very bright images make huge logits after one SGD step: a probability underflows
    # to 0 and the talk's -sum(Y_ * log(Y)) turns NaN.
    mnist = synthetic_mnist(brightness=50.0)
    with pytest.raises(training.TrainingError) as error:
        training.train(mnist, training.Config('softmax', iterations=200, loss='literal',
                                              eval_every=1, log_every=1, vis='none'),
                       workdir=str(tmp_path))
    message = str(error.value)
    assert 'log(0)' in message and '--loss=stable' in message
    saved = json.load(open(tmp_path / runs.HISTORY))
    assert saved['status'] == 'nan'
    step = saved['nan_step']
    assert 0 < step < 200
    # everything up to the failing step is kept; the NaN itself is written as null
    assert saved['train']['step'] == list(range(step + 1))
    assert saved['train']['loss'][-1] is None
    assert all(np.isfinite(saved['train']['loss'][:-1]))
    assert saved['test']['step'] == list(range(step))
    assert all(np.isfinite(saved['test']['loss']))


def test_stable_loss_survives_what_breaks_the_literal_one():
    config = training.Config('softmax', iterations=200, loss='stable', eval_every=50,
                             log_every=50, vis='none')
    history = training.train(synthetic_mnist(brightness=50.0), config)
    assert history['status'] == 'finished'
    assert np.isfinite(history['test']['loss']).all()


def test_workdir_never_overwrites_an_earlier_run(tmp_path):
    runs.write_history(str(tmp_path), training.new_history(training.Config('softmax', vis='none')))
    with pytest.raises(runs.WorkdirError, match='already holds a run'):
        runs.prepare_workdir(str(tmp_path), 'softmax')


def test_unwritable_workdir_is_refused_clearly(tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a directory')
    with pytest.raises(runs.WorkdirError, match='cannot write into the workdir'):
        runs.prepare_workdir(str(blocker / 'run'), 'softmax')


def test_default_workdirs_are_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runs.prepare_workdir(None, 'conv')
    second = runs.prepare_workdir(None, 'conv')
    assert first != second and first.startswith(os.path.join('runs', 'conv-'))


def test_the_talks_experiments_are_recorded_and_kept_on_resume(tmp_path):
    config = training.Config('five_layers_relu_lrdecay_dropout', iterations=20, eval_every=10,
                              log_every=10, pkeep=0.5, learning_rate=0.01, layers=3, vis='none')
    history = training.train(synthetic_mnist(), config, workdir=str(tmp_path))
    assert (history['pkeep'], history['learning_rate'], history['layers']) == (0.5, 0.01, 3)
    assert history['pkeep_in_training'] == 0.5
    assert history['train']['lr'][0] == pytest.approx(0.0001 + 0.01)  # the decay's start
    resumed = training.config_to_resume(str(tmp_path), {'iterations': 40}, {'iterations'})
    assert resumed.changes == {'learning_rate': 0.01, 'pkeep': 0.5, 'layers': 3}
    with pytest.raises(training.TrainingError, match='it was trained with --pkeep=0.5'):
        training.config_to_resume(str(tmp_path), {'pkeep': 0.75}, {'pkeep'})


def test_a_run_without_experiments_records_none_and_the_networks_own_pkeep(tmp_path):
    history = training.train(synthetic_mnist(), training.Config(
        'conv_dropout', iterations=5, eval_every=5, log_every=5, vis='none'),
        workdir=str(tmp_path))
    assert (history['pkeep'], history['learning_rate'], history['layers']) == (None,) * 3
    assert history['pkeep_in_training'] == 0.75
    assert training.Config.of_run(history).changes == {}


def test_a_history_from_before_the_experiments_resumes(tmp_path):
    old = {'model': 'conv', 'seed': 0, 'batch_size': 100, 'loss': 'stable', 'pkeep': 1.0}
    assert training.Config.of_run(old).changes == {}  # its pkeep was a fact, not a flag


@pytest.mark.parametrize('changes, says', [({'pkeep': 0.5}, 'no dropout'),
                                           ({'layers': 3}, 'dense networks')])
def test_an_experiment_that_changes_nothing_is_refused(changes, says):
    with pytest.raises(training.SettingsError, match=says):
        training.Config('conv', **changes, vis='none')


def test_the_command_line_and_the_library_have_one_default_per_setting():
    from absl import flags

    from graph_mnist import train
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    for field in dataclasses.fields(training.Config):
        assert flag_values[field.name].default == field.default, field.name
    assert training.Config.vis == 'auto'  # the dashboard by default, from a library call too


def test_the_summary_quotes_the_talk_only_for_the_talks_own_run():
    history = {'model': 'softmax', 'final_test_accuracy': 0.92, 'max_test_accuracy': 0.921,
               'max_test_step': 1900, 'final_step': 2000, 'wall_time': 2.0,
               'talk_accuracy': '"92%"', 'learning_rate': None, 'pkeep': None, 'layers': None}
    assert training.summary_line(history).endswith('2000 steps in 2.0 s (the talk: "92%")')
    short = training.summary_line({**history, 'final_step': 50})
    assert short.endswith('50 steps in 2.0 s')  # 50 steps are not judged by the talk's words
    changed = training.summary_line({**history, 'learning_rate': 0.01})
    assert 'the talk' not in changed


def test_bfloat16_is_refused_where_it_cannot_work(monkeypatch):
    from graph_mnist import training_graph
    with pytest.raises(training.SettingsError, match='--style=function has no Session'):
        training.Config('conv', style='function', precision='bfloat16', vis='none')
    monkeypatch.setattr(training_graph, 'bfloat16_support', lambda: False)
    with pytest.raises(training.SettingsError, match='this CPU has no bfloat16 instructions'):
        training.Config('conv', precision='bfloat16', vis='none')


def test_float16_is_the_gpus_and_refused_in_one_line_elsewhere(monkeypatch):
    from graph_mnist import training_graph
    monkeypatch.setattr(training_graph, 'gpu_present', lambda: False)
    with pytest.raises(training.SettingsError, match='TensorFlow sees no GPU here'):
        training.Config('conv', precision='float16', vis='none')
    monkeypatch.setattr(training_graph, 'gpu_present', lambda: True)
    with pytest.raises(training.SettingsError, match='the network runs on the GPU'):
        training.Config('conv', precision='bfloat16', vis='none')
    with pytest.raises(training.SettingsError, match='leave --steps_per_run at 1'):
        training.Config('conv', precision='float16', steps_per_run=10, log_every=10,
                        eval_every=10, checkpoint_every=10, vis='none')
    assert training.Config('conv', precision='float16', vis='none').precision == 'float16'


def test_a_float16_graph_scales_its_loss_and_trains_where_the_pass_finds_no_gpu(tmp_path):
    # Grappler's CUDA pass skips a machine without a GPU: the step runs in float32, with
    # the dynamic loss scaling float16 needs around it, which must not change its course
    from graph_mnist import training_graph
    g = training_graph.build('five_layers_relu', seed=1, precision='float16')
    options = g.config.graph_options.rewrite_options
    assert options.auto_mixed_precision == options.ON
    with g.graph.as_default():
        names = [v.op.name for v in tf.compat.v1.global_variables()]
    assert any('loss_scale' in name for name in names)
    plain = training_graph.build('five_layers_relu', seed=1)
    mnist = synthetic_mnist()
    losses = []
    for graph in (plain, g):
        with tf.compat.v1.Session(graph=graph.graph, config=graph.config) as sess:
            sess.run(graph.init)
            for step in range(5):
                feed = {graph.X: mnist.train_images[:100], graph.Y_: mnist.train_labels[:100],
                        graph.pkeep: 1.0, graph.step: step}
                losses.append(sess.run([graph.train_step, graph.cross_entropy], feed)[1])
    if not training_graph.gpu_present():
        np.testing.assert_allclose(losses[:5], losses[5:], rtol=1e-4)


def test_a_bfloat16_run_trains_and_says_so(tmp_path, monkeypatch):
    from graph_mnist import training_graph
    if not training_graph.bfloat16_support():  # refused here, as the test above shows
        monkeypatch.setattr(training_graph, 'bfloat16_support', lambda: True)  # emulated
    config = training.Config('conv', iterations=40, eval_every=20, log_every=10,
                             precision='bfloat16', vis='none')
    history = training.train(synthetic_mnist(), config, workdir=str(tmp_path))
    assert history['precision'] == 'bfloat16' and history['status'] == 'finished'
    losses = history['train']['loss']
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    resumed = training.Config.of_run(json.load(open(tmp_path / 'history.json')))
    assert resumed.precision == 'bfloat16'
