"""Measures what the saved dashboard costs: --vis=save against --vis=none, side by side.

    python scripts/vis_overhead.py --model=conv_dropout --repeats=2

Runs `python -m graph_mnist.train` alternately with --vis=none and --vis=save (order
flipped every repeat, so machine noise hits both alike), times each whole process, and
prints the ratio save / none (per pair and the median). Both write TensorBoard events;
the difference is the dashboard: drawing frames, the PNG and the GIF. Writes the runs
and vis_overhead.json into --workdir (default runs/vis_overhead-<date>-<time>; an
existing one is refused).
"""

import os
import shutil
import subprocess
import sys
import time

from absl import flags

from graph_mnist import files
from graph_mnist import runs

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('model', 'conv_dropout', 'Network to train.')
    flags.DEFINE_integer('iterations', None, 'Steps per run (default: the talk\'s).',
                         lower_bound=1)
    flags.DEFINE_integer('repeats', 2, 'Pairs of runs.', lower_bound=1)
    flags.DEFINE_string('workdir', None, 'Where the runs and vis_overhead.json go, new '
                        '(default runs/vis_overhead-<date>-<time>).')


def timed_run(workdir, vis):
    if os.path.exists(workdir):  # this tool's own run of the pair before
        shutil.rmtree(workdir)
    command = [sys.executable, '-m', 'graph_mnist.train', f'--model={FLAGS.model}',
               f'--vis={vis}', f'--workdir={workdir}']
    if FLAGS.iterations:
        command.append(f'--iterations={FLAGS.iterations}')
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv):
    del argv
    workdir = runs.make_new_dir(FLAGS.workdir, 'vis_overhead')
    pairs = []
    for repeat in range(FLAGS.repeats):
        order = ('none', 'save') if repeat % 2 == 0 else ('save', 'none')
        seconds = {vis: timed_run(os.path.join(workdir, f'run-{vis}'), vis)
                   for vis in order}
        pairs.append(seconds)
        print(f"pair {repeat + 1}: none {seconds['none']:.1f} s, save {seconds['save']:.1f} s, "
              f"ratio {seconds['save'] / seconds['none']:.3f}", flush=True)
    ratios = sorted(p['save'] / p['none'] for p in pairs)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else \
        (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    gif = os.path.join(workdir, 'run-save', 'dashboard.gif')
    result = {'model': FLAGS.model, 'pairs': pairs, 'ratios': ratios, 'median_ratio': median,
              'gif_bytes': os.path.getsize(gif) if os.path.exists(gif) else None}
    files.write_json(os.path.join(workdir, 'vis_overhead.json'), result)
    print(f'--vis=save / --vis=none, median over {len(ratios)} pairs: {median:.3f} '
          f'(GIF {result["gif_bytes"] / 1e6:.1f} MB)')


if __name__ == '__main__':
    from graph_mnist import cli
    cli.run(main, define_flags)
