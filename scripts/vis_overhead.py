"""Measures what the dashboard costs: --vis=save or notebook against none, side by side.

    python scripts/vis_overhead.py --model=conv_dropout --repeats=2               # save
    python scripts/vis_overhead.py --model=conv_dropout --repeats=2 --vis=notebook

save: runs `python -m graph_mnist.train` with --vis=none and --vis=save and times each
whole process; both write TensorBoard events, the difference is the dashboard (frames,
the PNG and the GIF). notebook: runs `notebook.run(model, vis=...)` in a fresh Jupyter
kernel (as a notebook cell does, the dashboard redrawn in the cell's output) and times
the training call inside the kernel, MNIST already loaded. The order of each pair is
flipped every repeat, so machine noise hits both alike; prints the ratio with / without
(per pair and the median). Writes the runs and vis_overhead.json into --workdir (default
runs/vis_overhead-<date>-<time>; an existing one is refused).
"""

import os
import shutil
import statistics
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
    flags.DEFINE_enum('vis', 'save', ['save', 'notebook'], 'The dashboard mode to measure.')
    flags.DEFINE_string('workdir', None, 'Where the runs and vis_overhead.json go, new '
                        '(default runs/vis_overhead-<date>-<time>).')


def timed_process(workdir, vis):
    """Seconds of a whole `python -m graph_mnist.train` process."""
    command = [sys.executable, '-m', 'graph_mnist.train', f'--model={FLAGS.model}',
               f'--vis={vis}', f'--workdir={workdir}']
    if FLAGS.iterations:
        command.append(f'--iterations={FLAGS.iterations}')
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed_in_kernel(workdir, vis):
    """Seconds of `notebook.run` in a fresh Jupyter kernel (MNIST loaded before)."""
    from jupyter_client.manager import start_new_kernel
    manager, client = start_new_kernel(kernel_name='python3')
    try:
        found = {}

        def keep(message):
            if message['msg_type'] == 'stream' and 'SECONDS' in message['content']['text']:
                found['seconds'] = float(message['content']['text'].split()[-1])

        reply = client.execute_interactive(
            'import time\nfrom graph_mnist import notebook\nnotebook.mnist()\n'
            'start = time.perf_counter()\n'
            f'notebook.run({FLAGS.model!r}, iterations={FLAGS.iterations}, '
            f'workdir={workdir!r}, vis={vis!r})\n'
            'print("SECONDS", time.perf_counter() - start)', timeout=3600, output_hook=keep)
        if reply['content']['status'] != 'ok':
            raise RuntimeError(f'the kernel failed: {reply["content"]}')
        return found['seconds']
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main(argv):
    del argv
    workdir = runs.make_new_dir(FLAGS.workdir, 'vis_overhead')
    timed = timed_in_kernel if FLAGS.vis == 'notebook' else timed_process
    pairs = []
    for repeat in range(FLAGS.repeats):
        order = ('none', FLAGS.vis) if repeat % 2 == 0 else (FLAGS.vis, 'none')
        seconds = {}
        for vis in order:
            run_dir = os.path.join(workdir, f'run-{vis}')
            if os.path.exists(run_dir):  # this tool's own run of the pair before
                shutil.rmtree(run_dir)
            seconds[vis] = timed(run_dir, vis)
        pairs.append(seconds)
        print(f"pair {repeat + 1}: none {seconds['none']:.1f} s, {FLAGS.vis} "
              f"{seconds[FLAGS.vis]:.1f} s, ratio {seconds[FLAGS.vis] / seconds['none']:.3f}",
              flush=True)
    ratios = sorted(p[FLAGS.vis] / p['none'] for p in pairs)
    median = statistics.median(ratios)
    gif = os.path.join(workdir, f'run-{FLAGS.vis}', 'dashboard.gif')
    result = {'model': FLAGS.model, 'vis': FLAGS.vis, 'iterations': FLAGS.iterations,
              'pairs': pairs, 'ratios': ratios, 'median_ratio': median,
              'gif_bytes': os.path.getsize(gif) if os.path.exists(gif) else None,
              'command': ' '.join(sys.argv), 'date': time.strftime('%Y-%m-%d')}
    files.write_json(os.path.join(workdir, 'vis_overhead.json'), result)
    print(f'--vis={FLAGS.vis} / --vis=none, median over {len(ratios)} pairs: {median:.3f}')


if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()  # the kernels inherit the filtered stderr
    cli.run(main, define_flags)
