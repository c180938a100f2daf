"""The benchmark's statistics and report: medians, spreads, ratios, the markdown table.

    python scripts/bench_report.py --results=results/benchmark/X.json --output=Y.md

restates a committed run's report with today's statistics (its per-round ratios are in
the JSON), into a new file beside it: the measurement itself is never rewritten.

A ratio of two contenders is taken within each round (both timed in the same round,
minutes apart at most, so a slow spell of the shared machine hits both), and a pair's
figure is the median of its per-round ratios with an interval for that median made of
two of the rounds' ratios (order statistics: no distribution assumed) and the coverage
that interval really has: with 5 rounds the rounds' [min, max], 94%; with 3, 75% (no
interval of 3 rounds reaches 90%). "Ahead" means the interval's low end is above 1. The
min-max spread of each contender over its processes is reported too, but it is no longer
the criterion.
"""

import math
import os
import statistics

import numpy as np

SPREAD_LIMIT = 0.10
LEVEL = 0.90  # the interval's coverage aimed at; the one reached is stated beside it
# the pairs the benchmark reports: key: (ours, theirs); 'keras_best' is the fastest
# Keras mode of that network
PAIRS = {'literal_over_keras_fit': ('ours', 'keras'),
         'graph_loop_over_keras_best': ('ours_loop', 'keras_best'),
         'graph_loop_over_torch': ('ours_loop', 'torch')}
# bfloat16, like for like: our rewritten graph against our float32 one and against Keras's
# mixed_bfloat16 policy at its best (reported in a section of their own)
BFLOAT16_PAIRS = {'bfloat16_over_float32': ('ours_bf16', 'ours'),
                  'bfloat16_over_keras_bfloat16': ('ours_bf16', 'keras_spe_bf16')}
# what the talk's literal lines cost: the same loop with one idiom written otherwise
# (graph_mnist.rewrite) over the literal one; above 1, the rewrite is faster
LITERAL_PAIRS = {'bias_add_over_plus': ('ours_bias_add', 'ours'),
                 'loop_bias_add_over_plus': ('ours_loop_bias_add', 'ours_loop'),
                 'fused_batch_norm_over_moments': ('ours_fused_bn', 'ours')}
# where a whole run's time goes: README's command, then without the dashboard, then
# also without the test evaluations but the first and last (the talk's run has 101)
RUN_PARTS = {'readme_command': [], 'vis_none': ['--vis=none'],
             'vis_none_2_evaluations': ['--vis=none', '--eval_every=10000']}


def summarize(seconds_per_step, batch=100):
    """Median images per second of the processes' figures, and their spread: (max -
    min) / median of their seconds per step."""
    median = statistics.median(seconds_per_step)
    spread = (max(seconds_per_step) - min(seconds_per_step)) / median
    return {'seconds_per_step': seconds_per_step, 'images_per_second': batch / median,
            'spread': spread, 'noisy': spread > SPREAD_LIMIT}


def median_interval(values, level=LEVEL):
    """(low, high, coverage): the interval [x(k), x(n+1-k)] of the sorted values whose
    probability of holding the true median is at least `level` with the narrowest such
    k, and that probability, 1 - 2 P(Binomial(n, 1/2) < k), true whatever the
    distribution. Too few values for `level`: the [min, max] and its lower coverage."""
    x, n = sorted(values), len(values)

    def coverage(k):
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n

    k = max((k for k in range(1, n // 2 + 1) if coverage(k) >= level), default=1)
    return x[k - 1], x[n - k], coverage(k)


def paired(ours, theirs):
    """ours / theirs in images per second, round by round (their seconds per step over
    ours, the processes of one round side by side): the median of the per-round ratios
    and its interval (median_interval) with the coverage it has. None when either side
    was not measured in every round."""
    if not ours or not theirs or 'seconds_per_step' not in ours or \
            'seconds_per_step' not in theirs or \
            len(ours['seconds_per_step']) != len(theirs['seconds_per_step']):
        return None
    ratios = np.array(theirs['seconds_per_step']) / np.array(ours['seconds_per_step'])
    low, high, coverage = median_interval(ratios.tolist())
    return {'median': float(np.median(ratios)), 'low': float(low), 'high': float(high),
            'coverage': coverage, 'rounds': ratios.tolist()}


def pairs(measured, keras_best):
    """Every pair of PAIRS that was measured: {key: paired(...)}."""
    named = dict(measured, keras_best=measured.get(keras_best))
    return {key: paired(named.get(a), named.get(b))
            for key, (a, b) in {**PAIRS, **BFLOAT16_PAIRS, **LITERAL_PAIRS}.items()}


def best_keras(measured):
    """The faster of the Keras modes measured (name, result), or (None, None)."""
    modes = [(name, r) for name, r in measured.items()  # float32 only: like for like
             if name.split('@')[0].startswith('keras') and 'bf16' not in name
             and 'images_per_second' in r]
    return max(modes, key=lambda m: m[1]['images_per_second'], default=(None, None))




def rate_text(r):
    if 'images_per_second' in r:
        return f"{r['images_per_second']:,.0f} (±{r['spread'] / 2:.0%})"
    if 'crashed' in r:
        return f"crashed ({r['crashed']})"
    return r.get('unavailable', 'not measured')


def ratio_text(r):
    """'**1.12** [1.03, 1.20]': the median per-round ratio and its interval; the interval's
    coverage follows it where it is not the table's (coverage_text)."""
    if not r:
        return '–'
    return f"**{r['median']:.2f}** [{r['low']:.2f}, {r['high']:.2f}]"


def restate(results):
    """The results with every pair's interval recomputed from its per-round ratios."""
    for r in results['models'].values():
        for key in {**PAIRS, **BFLOAT16_PAIRS, **LITERAL_PAIRS}:
            if r.get(key):
                low, high, coverage = median_interval(r[key]['rounds'])
                r[key].update(low=low, high=high, coverage=coverage)
    return results


def coverage_text(results):
    """What the table's intervals cover, from the pairs' own coverage."""
    found = {round(m[key]['coverage'], 3) for m in results['models'].values()
             for key in {**PAIRS, **BFLOAT16_PAIRS, **LITERAL_PAIRS}
             if 'coverage' in (m.get(key) or {})}
    if not found:
        return 'a bootstrap 90% interval (results older than the stated coverage)'
    return ('the interval between two rounds\' ratios that holds the true median with '
            'probability ' + ' or '.join(f'{c:.0%}' for c in sorted(found))
            + ', whatever the distribution')


def markdown(results):
    m = results['machine']
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['vector_extensions'])}; "
             + ', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)
             + f"; commit {m['commit']}; {results['date']}; `{results['command']}`", '',
             f"float32 matrix multiply peak (numpy, 2048x2048): {results['peak_gflops']:.0f} "
             'GFLOP/s', '',
             f'Ratios: median of the per-round ratios [{coverage_text(results)}]; images per '
             'second: median ± half the min-max spread over the processes.', '',
             '| network | ours, literal loop | ours, loop in the graph | Keras at its best '
             '(mode) | PyTorch | literal / Keras fit | graph loop / Keras best '
             '| graph loop / PyTorch | ours eval 10k (ms) | start-up (s) | graph loop '
             'GFLOP/s | of peak |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for model, r in results['models'].items():
        c = r['contenders']
        keras = c.get(r['keras_best']) if r['keras_best'] else None
        gflops = r['achieved_gflops'].get('ours_loop')
        lines.append(
            f"| `{model}` | {rate_text(c.get('ours', {}))} "
            f"| {rate_text(c.get('ours_loop', {}))} "
            f"| {rate_text(keras) + ' (' + r['keras_best'] + ')' if keras else '–'} "
            f"| {rate_text(c['torch']) if 'torch' in c else '–'} "
            + ''.join(f"| {ratio_text(r.get(key))} " for key in PAIRS)
            + f"| {c.get('ours', {}).get('eval_ms', float('nan')):.0f} "
            f"| {r.get('startup_s', float('nan')):.1f} "
            + (f"| {gflops:.1f} | {gflops / results['peak_gflops']:.1%} |"
               if gflops else '| – | – |'))
    others = sorted({n for r in results['models'].values() for n in r['contenders']
                     if n not in ('ours', 'ours_loop', 'torch')})
    if others:
        lines += ['', 'Every contender (images per second, median ± half the spread):', '',
                  '| network | ' + ' | '.join(others) + ' |',
                  '|---|' + '---|' * len(others)]
        for model, r in results['models'].items():
            lines.append(f'| `{model}` | ' + ' | '.join(
                rate_text(r['contenders'][n]) if n in r['contenders'] else '–' for n in others)
                + ' |')
    bfloat16 = [(model, r) for model, r in results['models'].items()
                if any(r.get(key) for key in BFLOAT16_PAIRS)]
    if bfloat16:
        lines += ['', 'bfloat16 (ours: --precision=bfloat16; Keras: mixed_bfloat16 with '
                  'steps_per_execution, as keras_spe), median ratio [interval]:', '',
                  '| network | ours bfloat16 / ours float32 | ours bfloat16 / Keras '
                  'bfloat16 |', '|---|---|---|']
        lines += [f"| `{model}` | {ratio_text(r.get('bfloat16_over_float32'))} "
                  f"| {ratio_text(r.get('bfloat16_over_keras_bfloat16'))} |"
                  for model, r in bfloat16]
    literal = [(model, key, r[key]) for model, r in results['models'].items()
               for key in LITERAL_PAIRS if r.get(key)]
    if literal:
        lines += ['', 'What the literal lines cost (graph_mnist.rewrite): milliseconds per '
                  'training step, median over the processes, and the median per-round ratio '
                  'literal / rewritten [interval] (above 1: the rewrite is faster):', '',
                  '| network | pair | literal (ms/step) | rewritten (ms/step) | ratio |',
                  '|---|---|---|---|---|']
        for model, key, ratio in literal:
            rewritten, plain = (results['models'][model]['contenders'][name]
                                for name in LITERAL_PAIRS[key])
            ms = [statistics.median(c['seconds_per_step']) * 1e3 for c in (plain, rewritten)]
            lines.append(f"| `{model}` | {key} | {ms[0]:.3f} | {ms[1]:.3f} "
                         f"| {ratio_text(ratio)} |")
    costs = [(model, name, c['eval_ms_by_batch']) for model, r in results['models'].items()
             for name, c in r['contenders'].items() if len(c.get('eval_ms_by_batch', {})) > 1]
    if costs:
        lines += ['', 'Evaluation of all 10,000 test images by images per Session.run '
                  '(ms, median):', '']
        for model, name, by_batch in costs:
            lines.append(f'- `{model}`, {name}: ' + ', '.join(
                f'{int(b):,}: {ms:.0f}' for b, ms in by_batch.items()))
    if 'time_to_99' in results:
        lines += ['', 'Time to 99% test accuracy, conv_dropout (evaluations of all 10,000 '
                  'every 100 steps included):', '']
        for name, per_seed in results['time_to_99'].items():
            lines.append(f'- {name}: ' + ', '.join(
                f"seed {s['seed']}: " + (f"{s['seconds']:.1f} s (step {s['step']:,})"
                                         if s.get('seconds') else s.get('crashed', 'never'))
                for s in per_seed))
    if 'run_parts' in results:
        p = results['run_parts']
        whole, no_vis, two = (p[k]['seconds'] for k in RUN_PARTS)
        lines += ['', f"Where the README command's time goes (whole processes, one each): "
                  f"{whole:.0f} s as it is, {no_vis:.0f} s with --vis=none (the dashboard: "
                  f"{whole - no_vis:.0f} s), {two:.0f} s with --vis=none --eval_every=10000 "
                  f"(99 test evaluations fewer: {(no_vis - two) / 99 * 1000:.0f} ms each)"]
    if 'readme_command' in results:
        r = results['readme_command']
        lines += ['', f"README command (`python -m graph_mnist.train --model=conv_dropout`): "
                  f"{r['seconds']:.0f} s whole process, {r['wall_time']:.0f} s of training; "
                  f"final test accuracy {r['final_test_accuracy']:.4f}"]
    return '\n'.join(lines)


def main(argv):
    del argv
    import json

    from graph_mnist import files
    from graph_mnist.errors import UserError
    if os.path.exists(FLAGS.output):
        raise UserError(f'{FLAGS.output} exists: a report is written once, into a new file')
    try:
        with open(FLAGS.results, encoding='utf-8') as f:
            results = restate(json.load(f))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f'{FLAGS.results}: not a benchmark result ({e})') from None
    text = (f'Restated from `{FLAGS.results}` by `python scripts/bench_report.py '
            f'--results={FLAGS.results} --output={FLAGS.output}`: the same measurement, '
            f'its intervals with the coverage they have.\n\n' + markdown(results) + '\n')
    files.write_atomically(FLAGS.output, text.encode())
    print(text)
    return 0


if __name__ == '__main__':
    from absl import flags

    from graph_mnist import cli

    FLAGS = flags.FLAGS

    def define_flags():
        flags.DEFINE_string('results', None, 'A benchmark\'s JSON (scripts/benchmark.py --json).')
        flags.DEFINE_string('output', None, 'The restated report to write (a new file).')
        flags.mark_flags_as_required(['results', 'output'])

    cli.run(main, define_flags)
