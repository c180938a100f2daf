"""Whole training runs of two versions of graph_mnist, timed side by side.

    git worktree add /tmp/before <commit>
    python scripts/time_two_trees.py --before=/tmp/before --after=. --model=conv_dropout \
        --iterations=3000 --pairs=2

Runs `python -m graph_mnist.train` with the same flags from each tree (PYTHONPATH),
alternating the order every pair, and prints the wall time of each whole process, the
`wall_time` each run recorded, and the ratios before / after.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def run(tree, workdir):
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    command = [sys.executable, '-m', 'graph_mnist.train', f'--model={FLAGS.model}',
               f'--iterations={FLAGS.iterations}', f'--vis={FLAGS.vis}', f'--workdir={workdir}']
    environment = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    start = time.perf_counter()
    subprocess.run(command, check=True, env=environment, cwd=tempfile.gettempdir(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(os.path.join(workdir, 'history.json')) as f:
        history = json.load(f)
    return seconds, history['wall_time'], history['final_test_accuracy']


def main(argv):
    del argv
    scratch = tempfile.mkdtemp()
    results = {'before': [], 'after': []}
    for pair in range(FLAGS.pairs):
        order = ('before', 'after') if pair % 2 == 0 else ('after', 'before')
        for name in order:
            tree = FLAGS.before if name == 'before' else FLAGS.after
            results[name].append(run(tree, os.path.join(scratch, name)))
        b, a = results['before'][-1], results['after'][-1]
        print(f'pair {pair + 1}: before {b[0]:.1f} s (loop {b[1]:.1f} s), after {a[0]:.1f} s '
              f'(loop {a[1]:.1f} s): before/after {b[0] / a[0]:.3f}; final accuracy '
              f'{b[2]:.4f} / {a[2]:.4f}', flush=True)
    ratios = sorted(b[0] / a[0] for b, a in zip(results['before'], results['after']))
    print(f'median before/after over {len(ratios)} pairs: {statistics.median(ratios):.3f}')
    shutil.rmtree(scratch)


if __name__ == '__main__':
    flags.DEFINE_string('before', None, 'Tree of the version before.')
    flags.DEFINE_string('after', '.', 'Tree of the version after.')
    flags.DEFINE_string('model', 'conv_dropout', 'Network.')
    flags.DEFINE_integer('iterations', 3000, 'Steps per run.')
    flags.DEFINE_string('vis', 'none', '--vis of the runs.')
    flags.DEFINE_integer('pairs', 2, 'Pairs of runs.')
    flags.mark_flag_as_required('before')
    app.run(main)
