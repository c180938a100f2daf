r"""Our training step at two commits of this repository, side by side: does a change to
the loop cost time?

    python scripts/bench_commits.py --base=0ba9afb --models=softmax,conv_dropout \
        --rounds=7 --json=results/loop_refactor/bench_commits.json

The base commit is checked out (git worktree) into a temporary directory. In each round,
for each network, a fresh process of each side (the order alternating from round to
round) builds the network with that side's own code and times `bench_contenders.Ours`
(our step as that side's training loop runs it: a batch from data.Batches and its
Session.run; with --loop=graph `OursLoop`, 100 steps of the loop in the graph a run)
over --steps steps after --warmup; a process prints its microseconds per step.
Reported: per network, each side's median and the median of the rounds' ratios
base / this (above 1: this checkout is faster).
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import flags
from absl import logging

from graph_mnist import machine
from graph_mnist.errors import UserError

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, sys, time
import bench_contenders
from graph_mnist import data
from graph_mnist.styles import twins
model, steps, warmup, data_dir, loop = sys.argv[1:6]
steps, warmup = int(steps), int(warmup)
mnist = data.load(data_dir or None, log=lambda message: None)
ours = getattr(bench_contenders, loop)(twins.describe(model), mnist)
ours.train_steps(warmup)
start = time.perf_counter()
ours.train_steps(steps)
print(json.dumps((time.perf_counter() - start) / steps * 1e6))
'''


LOOPS = {'talk': 'Ours', 'graph': 'OursLoop'}  # their classes in bench_contenders


def define_flags():
    flags.DEFINE_string('base', None, 'The commit to compare with.')
    flags.DEFINE_enum('loop', 'talk', list(LOOPS), 'Which loop to time: the talk\'s '
                      '(a Session.run a step) or the loop in the graph (100 steps a run).')
    flags.mark_flag_as_required('base')
    flags.DEFINE_list('models', ['softmax', 'conv_dropout'], 'Networks to time.')
    flags.DEFINE_integer('rounds', 7, 'Processes per side and network.', lower_bound=1)
    flags.DEFINE_integer('steps', 300, 'Timed steps per process.', lower_bound=1)
    flags.DEFINE_integer('warmup', 50, 'Steps before timing.', lower_bound=0)
    flags.DEFINE_string('data_dir', None, 'MNIST directory.')
    flags.DEFINE_string('json', None, 'Also write the results here (a new file).')


def time_once(checkout, model):
    """Microseconds per step of one fresh process running `checkout`'s code."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([checkout,
                                                        os.path.join(checkout, 'scripts')]),
               TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, '-c', CHILD, model, str(FLAGS.steps),
                             str(FLAGS.warmup), FLAGS.data_dir or '', LOOPS[FLAGS.loop]],
                            capture_output=True, text=True, env=env, cwd=checkout,
                            timeout=900)
    if result.returncode:
        raise UserError(f'{checkout}: {result.stderr.strip().splitlines()[-1]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.json and os.path.exists(FLAGS.json):
        raise UserError(f'{FLAGS.json} exists: results are never overwritten')
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, 'base')
        subprocess.run(['git', '-C', HERE, 'worktree', 'add', '--detach', base, FLAGS.base],
                       check=True, capture_output=True)
        try:
            results = {}
            for model in FLAGS.models:
                times = {'base': [], 'this': []}
                for r in range(FLAGS.rounds):
                    order = ('base', 'this') if r % 2 == 0 else ('this', 'base')
                    for side in order:
                        times[side].append(time_once(base if side == 'base' else HERE, model))
                    logging.info('%s round %d: base %.1f us, this %.1f us', model, r + 1,
                                 times['base'][-1], times['this'][-1])
                ratios = [b / t for b, t in zip(times['base'], times['this'])]
                results[model] = {'base_us': times['base'], 'this_us': times['this'],
                                  'median_base_us': statistics.median(times['base']),
                                  'median_this_us': statistics.median(times['this']),
                                  'median_ratio_base_over_this': statistics.median(ratios),
                                  'ratios': ratios}
                logging.info('%s: median ratio base/this %.3f', model,
                             statistics.median(ratios))
        finally:
            subprocess.run(['git', '-C', HERE, 'worktree', 'remove', '--force', base],
                           capture_output=True)
    report = {'command': 'python scripts/bench_commits.py ' + ' '.join(sys.argv[1:]),
              'base': FLAGS.base, 'machine': machine.machine(), 'results': results}
    print(json.dumps(report, indent=1))
    if FLAGS.json:
        os.makedirs(os.path.dirname(FLAGS.json) or '.', exist_ok=True)
        with open(FLAGS.json, 'x') as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
