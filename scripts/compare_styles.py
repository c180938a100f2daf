r"""Sets the runs of one network in TensorFlow 2's styles beside the talk's graph.

    python scripts/compare_styles.py                       # the committed runs, below
    python scripts/compare_styles.py \
        --graph='results/talk_comparison/runs/conv_dropout-it10000-seed*'

Each argument is a glob of run directories (their history.json) made by
`python -m graph_mnist.train --style=... --seed=...`. Prints a Markdown table: final and
max test accuracy over the seeds, seconds per training step (the run's wall time over
its steps, its evaluations included), and whether each style's mean final accuracy lies
within --tolerance of the graph's. --output also writes it to a file.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import glob

from absl import flags
import numpy as np

from graph_mnist import files
from graph_mnist import runs
from graph_mnist.errors import UserError
from graph_mnist.styles.eager import STYLES

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('graph', 'results/styles/conv_dropout-graph-seed*',
                        'Runs of the graph style (the talk\'s Session loop).')
    flags.DEFINE_string('function', 'results/styles/conv_dropout-function-seed*',
                        'Runs of --style=function.')
    flags.DEFINE_string('keras', 'results/styles/conv_dropout-keras-seed*',
                        'Runs of --style=keras.')
    flags.DEFINE_float('tolerance', 0.002, 'Largest difference of mean final accuracy '
                       'from the graph style\'s that counts as the same.')
    flags.DEFINE_string('output', None, 'Also write the table to this file.')


def load(pattern):
    """The finished histories of the run directories matching `pattern`, by seed."""
    found = [runs.finished(d) for d in sorted(glob.glob(pattern))]
    histories = [h for h in found if h]
    if not histories:
        raise UserError(f'no finished run matches {pattern}')
    return sorted(histories, key=lambda h: h['seed'])


def table(by_style, tolerance):
    graph = by_style['graph']
    graph_mean = float(np.mean([h['final_test_accuracy'] for h in graph]))
    graph_pace = float(np.mean([h['wall_time'] / h['final_step'] for h in graph]))
    lines = ['| style | seeds | final test accuracy (per seed) | mean | max (mean) '
             '| ms per step | time against the graph | mean final within '
             f'{tolerance} of the graph\'s |', '|---|---|---|---|---|---|---|---|']
    for style, histories in by_style.items():
        finals = [h['final_test_accuracy'] for h in histories]
        pace = float(np.mean([h['wall_time'] / h['final_step'] for h in histories]))
        mean = float(np.mean(finals))
        lines.append(
            f"| `{style}` | {', '.join(str(h['seed']) for h in histories)} "
            f"| {', '.join(f'{a:.4f}' for a in finals)} | {mean:.4f} "
            f"| {np.mean([h['max_test_accuracy'] for h in histories]):.4f} "
            f"| {pace * 1000:.2f} | {pace / graph_pace:.2f}x "
            f"| {'yes' if abs(mean - graph_mean) <= tolerance else '**no**'} "
            f"({mean - graph_mean:+.4f}) |")
    return '\n'.join(lines)


def main(argv):
    del argv
    by_style = {style: load(getattr(FLAGS, style)) for style in STYLES}
    models = {h['model'] for histories in by_style.values() for h in histories}
    if len(models) != 1:
        raise UserError(f'the runs are of several networks: {sorted(models)}')
    report = table(by_style, FLAGS.tolerance)
    print(report)
    if FLAGS.output:
        files.write_atomically(FLAGS.output, (report + '\n').encode())
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
