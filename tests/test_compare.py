"""scripts/compare_with_talk.py: verdicts and claims on made-up histories, cache, a real run."""

import json
import os

import numpy as np
import pytest

import compare_with_talk as compare
from conftest import run_script


def fake_history(model, final, maximum=None, steps=10000, noise=0.0, loss_rise=0.0,
                 train_accuracy=0.99, early=0.9, seed=0):
    rng = np.random.default_rng(seed)
    test_steps = list(range(0, steps + 1, 100))
    accuracy = np.linspace(early, final, len(test_steps)) + rng.normal(0, noise, len(test_steps))
    accuracy[-1] = final
    if maximum is not None:
        accuracy[len(accuracy) // 2] = maximum
    loss = np.concatenate([np.linspace(30, 5, len(test_steps) // 2),
                           np.linspace(5, 5 + loss_rise, len(test_steps) - len(test_steps) // 2)])
    train_steps = list(range(0, steps, 20))
    return {
        'model': model, 'status': 'finished', 'seed': seed, 'final_step': steps,
        'final_test_accuracy': float(final), 'max_test_accuracy': float(max(accuracy)),
        'wall_time': 10.0,
        'test': {'step': test_steps, 'accuracy': accuracy.tolist(), 'loss': loss.tolist()},
        'train': {'step': train_steps, 'accuracy': [train_accuracy] * len(train_steps)},
    }


def test_verdict_rule():
    assert compare.verdict(0.993, [0.9931, 0.9928, 0.9935]) == 'reproduced'
    assert compare.verdict(0.993, [0.9926, 0.9925, 0.9927]) == 'reproduced'  # rounding
    assert compare.verdict(0.993, [0.9917, 0.9934, 0.9933]) == 'reproduced'  # mean 0.9928
    assert compare.verdict(0.993, [0.9910, 0.9915, 0.9930]) == 'within noise'  # best seed
    assert compare.verdict(0.993, [0.9900, 0.9930, 0.9915]) == 'within noise'
    assert compare.verdict(0.993, [0.9910, 0.9915, 0.9912]) == 'not reproduced'
    assert compare.verdict(0.92, [0.9226]) == 'reproduced'


def test_table_rows_and_markdown():
    histories = {('conv_dropout', s): fake_history('conv_dropout', f, m, seed=s)
                 for s, (f, m) in enumerate([(0.9906, 0.9910), (0.9925, 0.9915),
                                             (0.9923, 0.9930)])}
    rows = compare.table_rows(histories)
    assert len(rows) == 1
    row = rows[0]
    assert row['seeds'] == 3 and row['steps'] == 10000
    assert row['final'] == [0.9906, 0.9925, 0.9923]
    assert row['max'] == pytest.approx([0.9910, 0.9925, 0.9930])
    assert row['verdict'] == 'within noise'
    table = compare.markdown_table(rows)
    assert '| `conv_dropout` | 99.30%: "99.3%"' in table
    assert '0.9918 ± 0.0009' in table  # mean ± std of the finals
    assert 'within noise' in table


def test_claims_are_measured_from_the_curves():
    histories = {
        ('five_layers_sigmoid', 0): fake_history('five_layers_sigmoid', 0.975, early=0.5),
        ('five_layers_relu', 0): fake_history('five_layers_relu', 0.978, early=0.9,
                                              noise=0.004, loss_rise=8),
        ('five_layers_relu_lrdecay', 0): fake_history('five_layers_relu_lrdecay', 0.982,
                                                      loss_rise=6, train_accuracy=1.0),
        ('five_layers_relu_lrdecay_dropout', 0): fake_history(
            'five_layers_relu_lrdecay_dropout', 0.981, loss_rise=1),
        ('conv', 0): fake_history('conv', 0.989, loss_rise=3),
        ('conv_dropout', 0): fake_history('conv_dropout', 0.992, early=0.95, loss_rise=0.5),
    }
    checks = {claim: (measured, holds) for claim, measured, holds in compare.claims(histories)}
    assert checks['ReLU starts faster than sigmoid'][1]
    assert checks['Learning-rate decay removes the noise'][1]
    assert checks['With decay the training set is learned perfectly'][1]
    assert checks['Dropout brings the test cross-entropy under control '
                  '(five_layers_relu_lrdecay)'][1]
    assert 'without dropout 6.00, with 1.00' in checks[
        'Dropout brings the test cross-entropy under control (five_layers_relu_lrdecay)'][0]
    assert checks['Convolutions beat dense layers'][1]
    measured, holds = checks['The bigger conv net with dropout passes 99%']
    assert holds and 'first step at or above 0.99, per seed: ' in measured

    histories[('five_layers_relu_lrdecay', 0)] = fake_history(
        'five_layers_relu_lrdecay', 0.982, train_accuracy=0.97)
    checks = {c: ok for c, _, ok in compare.claims(histories)}
    assert not checks['With decay the training set is learned perfectly']


def test_tiny_real_comparison_then_cached(tmp_path, mnist_dir, monkeypatch):
    workdir = str(tmp_path)
    report = compare.compare(workdir, ['softmax', 'five_layers_relu'], seeds=1,
                             iterations=300, data_dir=mnist_dir)
    assert '| `softmax` |' in report and '| `five_layers_relu` |' in report
    for name in ('comparison.md', 'comparison.json', 'recap.png'):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    rows = json.load(open(os.path.join(workdir, 'comparison.json')))['rows']
    assert [r['steps'] for r in rows] == [300, 300]
    assert rows[0]['final'][0] > 0.85

    def must_not_train(*args):
        raise AssertionError('a cached run was trained again')

    monkeypatch.setattr(compare, 'start_run', must_not_train)
    assert compare.compare(workdir, ['softmax', 'five_layers_relu'], seeds=1,
                           iterations=300, data_dir=mnist_dir) == report

    # a smaller comparison would overwrite this one: refused, nothing lost
    with pytest.raises(compare.UserError, match='more networks, seeds or steps'):
        compare.compare(workdir, ['softmax'], seeds=1, iterations=300, data_dir=mnist_dir)
    assert json.load(open(os.path.join(workdir, 'comparison.json')))['rows'] == rows


def test_default_workdir_is_new_and_never_the_committed_results(tmp_path, mnist_dir):
    result = run_script('compare_with_talk.py', '--models=softmax', '--seeds=1',
                        '--iterations=20', f'--data_dir={mnist_dir}', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    made, = (tmp_path / 'runs').iterdir()
    assert made.name.startswith('talk_comparison-')
    assert (made / 'comparison.json').exists() and not (tmp_path / 'results').exists()
