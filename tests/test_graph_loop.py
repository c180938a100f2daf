"""The training loop moved into the graph (--steps_per_run): the same batches and the
same numbers as the talk's loop, everything a run does still done between its runs."""

from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import distributed
from graph_mnist import runs
from graph_mnist import training


def trained_variables(workdir):
    """{name: value} of every variable in a run's latest checkpoint (weights, biases,
    the optimizer's slots, batch norm's averages)."""
    path = checkpoints.latest(workdir)[0]
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)}


@pytest.mark.parametrize('model', ['five_layers_relu_lrdecay', pytest.param(
    'batchnorm_five_layers_relu', marks=pytest.mark.slow)])  # batch norm: 5 s more
def test_100_steps_per_run_train_the_weights_of_the_talks_loop(model, tmp_path):
    """No dropout (pkeep 1.0): 200 steps one Session.run each, and two runs of 100 steps
    in the graph, end with the same variables, to float rounding (seen: equal)."""
    mnist = synthetic_mnist(n_train=2000)
    histories, variables = {}, {}
    for n in (1, 100):
        workdir = str(tmp_path / f'n{n}')
        config = training.Config(model, iterations=200, eval_every=100, log_every=100,
                                 checkpoint_every=100, steps_per_run=n, vis='none')
        histories[n] = training.train(mnist, config, workdir)
        variables[n] = trained_variables(workdir)
    assert variables[1].keys() == variables[100].keys()
    assert any('Adam' in name for name in variables[1])  # the optimizer's state too
    for name, value in variables[1].items():
        np.testing.assert_allclose(variables[100][name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    for kind in ('train', 'test'):
        assert histories[100][kind]['step'] == histories[1][kind]['step']
        np.testing.assert_allclose(histories[100][kind]['loss'], histories[1][kind]['loss'],
                                   rtol=1e-5)
    assert histories[100]['steps_per_run'] == 100


def test_a_run_with_the_loop_in_the_graph_stops_and_resumes(tmp_path):
    mnist = synthetic_mnist()
    config = training.Config('conv_dropout', iterations=60, eval_every=20, log_every=10,
                             checkpoint_every=20, steps_per_run=10, vis='none')
    stops = iter([False] * 3 + [True])
    with pytest.raises(training.Interrupted) as stopped:
        training.train(mnist, config, str(tmp_path), stop_requested=lambda: next(stops))
    assert stopped.value.step == 30  # between runs of 10
    history = training.train(mnist, config, str(tmp_path), resume=True)
    assert history['status'] == 'finished' and history['final_step'] == 60
    assert runs.read_history(str(tmp_path))['test']['step'] == [0, 20, 40, 60]
    assert history['final_test_accuracy'] > 0.3


def test_steps_per_run_must_divide_what_happens_between_runs():
    with pytest.raises(training.SettingsError, match=r'--steps_per_run=30 must divide '
                       r'--log_every=20, --eval_every=100, --checkpoint_every=1000'):
        training.Config('softmax', steps_per_run=30, vis='none')
    with pytest.raises(training.SettingsError, match='at least 1'):
        training.Config('softmax', steps_per_run=0, vis='none')
    assert training.Config('softmax', steps_per_run=20, vis='none').steps_per_run == 20


def test_the_last_run_is_shorter_when_the_steps_run_out():
    history = training.train(synthetic_mnist(), training.Config(
        'softmax', iterations=50, eval_every=20, log_every=20, checkpoint_every=20,
        steps_per_run=20, vis='none'))
    assert history['final_step'] == 50 and history['test']['step'] == [0, 20, 40, 50]


def test_a_cluster_refuses_the_loop_in_the_graph_in_one_line():
    task = distributed.Task({'chief': ['127.0.0.1:1'], 'ps': ['127.0.0.1:2']}, 'chief', 0)
    with pytest.raises(distributed.ClusterError, match='--steps_per_run is for one machine'):
        distributed.build(task, training.Config('softmax', steps_per_run=10,
                                                        log_every=10, vis='none'))


def test_periods_not_given_are_rounded_up_to_whole_runs_given_ones_kept():
    settings = {'steps_per_run': 100, 'log_every': 20, 'eval_every': 100,
                'checkpoint_every': 1000}
    assert training.periods_for_the_runs(settings, given={'steps_per_run'}) == \
        {'steps_per_run': 100, 'log_every': 100, 'eval_every': 100, 'checkpoint_every': 1000}
    kept = training.periods_for_the_runs(settings, given={'steps_per_run', 'log_every'})
    assert kept['log_every'] == 20  # the user's: Config refuses it, saying why
    with pytest.raises(training.SettingsError, match='must divide --log_every=20'):
        training.Config('softmax', **kept, vis='none')
