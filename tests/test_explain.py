"""The deferred-execution lesson: its observations come from the real graphs."""

import json

from conftest import run_module
from conftest import synthetic_batch
from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import explain
from graph_mnist import talk


@pytest.fixture(scope='module')
def observed(tmp_path_factory):
    return {name: explain.observe(name, batch=synthetic_batch(),
                                  workdir=str(tmp_path_factory.mktemp(name)))
            for name in ('softmax', 'five_layers_relu', 'conv_dropout')}


def test_building_computes_nothing(observed):
    built = observed['conv_dropout']['built']
    assert built['is_symbolic']
    assert 'numpy' in built['asking_for_a_value']
    assert built['tensors']['X']['shape'] == [None, 28, 28, 1]  # batch size unknown
    assert built['tensors']['Ylogits']['shape'] == [None, 10]
    assert built['tensors']['accuracy']['shape'] == []


def test_minimize_adds_operations(observed):
    for name, o in observed.items():
        m = o['minimize']
        assert m['operations_after'] > m['operations_before'] > 0, name
        assert sum(m['added_by_kind'].values()) == m['operations_after'] - m['operations_before']
        assert m['added_by_kind']['gradients (reverse-mode differentiation of the loss)'] > 0
    # Adam keeps two slots per variable; plain gradient descent keeps none
    assert 'optimizer slots and state (variables)' not in \
        observed['softmax']['minimize']['added_by_kind']
    assert observed['conv_dropout']['minimize']['added_by_kind'][
        'optimizer slots and state (variables)'] >= 2 * 10


def test_placeholders_per_fetch(observed):
    dropout = observed['conv_dropout']['needs']['placeholders']
    assert dropout['train_step'] == ['X', 'Y_', 'pkeep', 'step']  # decay needs the step
    assert 'step' not in dropout['accuracy']
    assert dropout['accuracy'] == ['X', 'Y_', 'pkeep']
    plain = observed['five_layers_relu']['needs']['placeholders']
    assert plain['train_step'] == ['X', 'Y_']  # fixed rate, no dropout: nothing else
    assert observed['softmax']['needs']['placeholders']['accuracy'] == ['X', 'Y_']


def test_missing_feed_is_caught_with_tensorflows_own_words(observed):
    missing = observed['softmax']['needs']['missing_feed']
    assert missing['error'] == 'InvalidArgumentError'
    assert "You must feed a value for placeholder tensor 'Y_'" in missing['message']


def test_parameter_counts_are_the_sum_of_the_variables(observed):
    for o in observed.values():
        m = o['minimize']
        assert m['trainable_parameters'] == sum(p['size'] for p in m['parameters'].values())
        for p in m['parameters'].values():
            assert p['size'] == int(np.prod(p['shape']))
    softmax = observed['softmax']['minimize']
    assert softmax['parameters']['W:0']['shape'] == [784, 10]
    assert 7800 < softmax['trainable_parameters'] < 8000  # the talk's "almost 8,000"


def test_one_run_changes_every_variable_and_lowers_the_loss(observed):
    for o in observed.values():
        run = o['run']
        assert run['loss_after'] < run['loss_before']
        assert all(change > 0 for change in run['changed'].values())


def test_eager_and_graph_agree(observed):
    for o in observed.values():
        eager = o['eager']
        assert eager['executing_eagerly'] and eager['has_value_at_once']
        assert eager['max_abs_difference'] < 1e-4
        assert np.abs(np.array(eager['first_logits'])).max() > 0  # a real comparison


def test_graph_written_for_tensorboard_and_as_text(observed, tmp_path):
    written = observed['softmax']['written']
    text = open(written['graphdef_text']).read()
    assert 'name: "cross_entropy"' in text and 'name: "X"' in text
    assert written['command'].startswith('tensorboard --logdir ')


def test_cli_json(tmp_path, mnist_dir):
    result = run_module('graph_mnist.explain', '--model=softmax', '--format=json',
                        f'--data_dir={mnist_dir}', f'--workdir={tmp_path}')
    assert result.returncode == 0, result.stderr
    o = json.loads(result.stdout)
    assert o['minimize']['trainable_parameters'] == 7850
    assert o['run']['batch'] == [100, 28, 28, 1]
    text = run_module('graph_mnist.explain', '--model=softmax', f'--data_dir={mnist_dir}',
                      f'--workdir={tmp_path}')
    assert '1. Building the graph computes nothing.' in text.stdout
    assert 'tensorboard --logdir' in text.stdout


def test_what_minimize_added_is_only_what_minimize_added():
    from graph_mnist import training_graph
    g = training_graph.build('conv_dropout')
    added = [g.graph.get_operations()[i] for i in g.minimize_ops]
    assert added and not any(op.name.startswith(('save', 'init')) for op in added)
    later = g.graph.get_operations()[g.minimize_ops.stop:]
    assert any(op.name.startswith('save') for op in later)  # the Saver comes after


def test_batch_norm_averages_move_only_with_the_training_step(tmp_path):
    o = explain.observe('batchnorm_five_layers_sigmoid', batch=synthetic_batch())
    a = o['moving_averages']
    assert len(a['variables']) == 2 * 4 and len(a['update_ops']) == 4
    assert a['moved_by_evaluations'] == 0 and a['moved_by_the_training_step'] == 8
    assert 'does not support non-Variable tensors' in o['eager']['refused']
    text = explain.lesson(o)
    assert 'moved 0 of them; one training step moved 8' in text


def test_the_loop_in_the_graph_runs_many_steps_in_one_session_run():
    """One Session.run of the loop, and Adam counted that many updates; every timing
    is taken (the lesson prints them, no figure is asserted)."""
    mnist = synthetic_mnist(n_train=1000)
    loop = explain.observe_loop('five_layers_relu', mnist.train_images, mnist.train_labels,
                                steps=10, repeats=1)
    assert loop['updates_in_one_run'] == 10 and loop['steps_per_run'] == 10
    assert loop['literal_us'] > 0 and loop['in_graph_us'] > 0 and loop['call_us'] > 0
    assert len(loop['timings_s_per_step']['literal']) == 1
    assert '. The loop moved into the graph.\n   10 training steps in one Session.run.' \
        in explain.lesson({**explain.observe('softmax', (mnist.train_images[:100],
                                                         mnist.train_labels[:100])),
                           'loop': loop})


# ---------------------------------------------------- chapters 7 to 11: graph_mnist.today


@pytest.fixture(scope='module')
def a_batch():
    from conftest import synthetic_batch
    return synthetic_batch(100)


def test_the_state_lives_in_the_session(a_batch):
    from graph_mnist import today
    o = today.observe_session('softmax', a_batch)
    assert o['before_init']['error'] == 'FailedPreconditionError'
    assert 'W' in o['before_init']['message']  # names the variable without a value
    two = o['two_sessions']
    assert two['changed_in_the_first'] > 0 and two['changed_in_the_second'] == 0


def test_a_session_run_runs_only_what_its_fetches_need(a_batch):
    from graph_mnist import today
    counts = today.observe_session('conv', a_batch)['executed']['per_fetch']
    together = counts['accuracy and cross_entropy together']
    assert counts['accuracy'] < counts['train_step']  # no gradients for a measurement
    assert max(counts['accuracy'], counts['cross_entropy']) <= together < \
        counts['accuracy'] + counts['cross_entropy']  # one forward pass, shared


def test_grappler_rewrites_log_of_softmax_unless_told_not_to(a_batch):
    from graph_mnist import today
    o = today.observe_grappler(a_batch)
    assert o['written'] == {'Log': 1, 'Softmax': 2, 'LogSoftmax': 0}
    assert o['run_by_default'] == {'Log': 0, 'LogSoftmax': 1}
    assert o['run_with_rewrites_off'] == {'Log': 1, 'LogSoftmax': 0}  # --loss=literal


def test_tf_function_traces_once_per_shape_and_autograph_makes_a_cond(a_batch):
    from graph_mnist import today
    o = today.observe_function('conv_dropout', a_batch)
    assert o['traces_after_three_calls'] == 1 and o['traces_after_a_new_shape'] == 2
    assert o['traced_shapes'] == [[100, 28, 28, 1], [50, 28, 28, 1]]
    assert o['autograph_conditional'] and all('If' in t for t in o['autograph_conditional'])
    assert o['traced_network'] == o['talks_network']  # the same arithmetic, traced
    assert o['talks_network']['Conv2D'] == 3


def test_gradient_tape_gives_minimizes_gradients(a_batch):
    from graph_mnist import today
    o = today.observe_tape('five_layers_relu', a_batch)
    assert o['variables'] == 10 and o['largest_gradient'] > 0
    assert o['max_abs_difference'] <= 1e-5 * o['largest_gradient']


def test_the_lesson_goes_in_the_order_of_its_ideas(a_batch):
    from graph_mnist import costs
    from graph_mnist import today
    o = {**explain.observe('softmax', a_batch), 'today': today.observe('softmax', a_batch),
         'costs': costs.observe()}
    text = explain.lesson(o)
    order = ['1. Building the graph computes nothing.', '2. A value exists only when',
             '3. The state lives in the Session.', '4. A Session.run runs only',
             '5. minimize() added the gradients', '6. TensorFlow rewrites the graph',
             '7. What graphs cost', "8. Today's answer: eager execution"]  # no loop observed
    assert [text.index(title) for title in order] == sorted(text.index(t) for t in order)
    assert 'reverse-mode automatic differentiation' in text and 'formal' not in text
    assert 'it needs no graph built before running' in text
    assert today.observe('batchnorm_conv', a_batch) == {
        'refused': 'batchnorm_conv: batch norm has no TensorFlow 2 twin here (its moving '
                   'averages are graph collections)'}


def test_each_step_prints_its_code_and_its_diff_from_the_step_before():
    from graph_mnist import steps
    relu = steps.step('five_layers_relu')
    assert '--- models.py, five_layers_sigmoid' in relu
    assert '-    return _five_layers(X, tf.nn.sigmoid, bias_init=0.0, layers=layers)' in relu
    assert '+    return _five_layers(X, tf.nn.relu, bias_init=0.1, layers=layers)' in relu
    assert 'def _five_layers(' in relu  # the helper the network calls, printed whole
    dropout = steps.step('conv_dropout')  # conv_bigger's own function: only pkeep moves
    assert steps.diff('conv_dropout') == ''
    assert '  pkeep (dropout): 1 -> 0.75' in dropout
    decay = steps.step('five_layers_relu_lrdecay')
    assert '  learning rate: 0.003 -> 0.0001 + 0.003·e^(−step/2000)' in decay
    assert steps.previous('softmax') is None and steps.previous('batchnorm_conv') == 'conv_dropout'
    assert [steps.previous(name) for name in talk.TALK[1:]] == talk.TALK[:-1]


def test_explain_code_prints_the_step_without_data_or_a_graph():
    result = run_module('graph_mnist.explain', '--code', '--model=five_layers_relu',
                        '--data_dir=/nonexistent')
    assert result.returncode == 0, result.stderr
    assert '+    return _five_layers(X, tf.nn.relu' in result.stdout


def test_grappler_rewrites_log_softmax_alone_but_not_in_a_training_step(a_batch):
    """Chapter 6 both ways: Grappler's rewrite of log(softmax) into LogSoftmax needs the
    Log to be the softmax's only reader; in a training step its gradient reads it too."""
    from graph_mnist import today
    o = today.observe_grappler(a_batch)
    assert o['run_by_default'] == {'Log': 0, 'LogSoftmax': 1}
    assert o['run_with_rewrites_off'] == {'Log': 1, 'LogSoftmax': 0}
    assert o['run_in_a_training_step'] == {'Log': 1, 'LogSoftmax': 0}
    assert len(o['softmax_readers']) > 1 and 'Log' in o['softmax_readers']
    from graph_mnist import training_graph
    if training_graph.bfloat16_support():  # and the same graph asked for bfloat16
        b = o['bfloat16']
        assert b['matmuls_in_bfloat16'] == b['ran_matmuls'] > 0 and b['casts_to_bfloat16'] > 0
    else:
        assert o['bfloat16'] is None


def test_what_graphs_cost_each_observed():
    """Chapter 7: each cost of a graph as TensorFlow shows it today; any of these fails
    when TensorFlow behaves otherwise."""
    from graph_mnist import costs
    o = costs.observe()
    error = o['error']  # built without complaint, refused only when run, naming the op
    assert error['error_at_run'] == 'InvalidArgumentError' and error['names_the_op']
    assert 'incompatible' in error['message']
    values = o['values']  # a symbol for print, values from tf.print only when it runs
    assert values['python_print'].startswith('Tensor("doubled:0"')
    assert values['tf_print_when_not_run'] == '' and values['tf_print_when_run'] == \
        'doubled: [2 4 6]'
    assert o['retracing']['traces'] == {'python number': 3, 'tensor': 1, 'input_signature': 1}
    growing = o['growing']  # one op more at every step, until the graph is finalized
    assert growing['operations_after_each_step'] == [3, 5, 7]
    assert 'finalized' in growing['finalized_refuses']
    eagerly = o['eagerly']  # and run_functions_eagerly is switched back off
    assert (eagerly['python_ran_traced'], eagerly['python_ran_eagerly']) == (1, 2)
    assert eagerly['eager_sees'] == 'EagerTensor'
    assert not tf.config.functions_run_eagerly()
    lines = costs.chapter(o)
    assert any('Matrix size-incompatible' in line for line in lines)
