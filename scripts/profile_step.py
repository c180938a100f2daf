r"""Where a training step's time goes, operation by operation: ours (the talk's loop and
the loop moved into the graph) against Keras at its best, from TensorFlow's own profiler.

    python scripts/profile_step.py --models=conv_dropout,five_layers_relu --out=runs/profile

Each contender (scripts/bench_contenders.py's, so the same networks and steps the
benchmark times) runs in a fresh process: it warms up, then trains --steps steps under
`tf.profiler.experimental` (which traces a Session's executor and Keras's compiled
function alike). The trace's TensorFlow operations are summed by kind, over every
thread, per training step: what ran, under which kernel (oneDNN's `_Mkl...` fused ones
included), for how long. Threads run side by side, so the sum over kinds can exceed the
step's wall time. Written: <out>/profile.json and <out>/profile.md (a new directory).
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags
from absl import logging
import bench_contenders as contenders

from graph_mnist import data
from graph_mnist import files
from graph_mnist import talk
from graph_mnist.errors import UserError
from graph_mnist.machine import machine
from graph_mnist.styles import twins

CONTENDERS = ('ours', 'ours_loop', 'keras_spe')
FLAGS = flags.FLAGS


def op_times(xplane_path, steps):
    """{operation kind: microseconds per step} from a profiler trace: the events of the
    TensorFlow executor threads named 'node:Kind', summed over threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    with open(xplane_path, 'rb') as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        names = {key: m.name for key, m in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith('tf_Compute'):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, '')
                if ':' in name and not name.startswith('ExecutorState'):
                    totals[name.rsplit(':', 1)[1]] += event.duration_ps
    return {kind: ps / 1e6 / steps for kind, ps in totals.most_common()}


def profile(name, model, steps, warmup, data_dir=None):
    """One contender's step, profiled in this process: wall time and operations."""
    import tensorflow as tf
    mnist = data.load(data_dir, log=lambda message: None)
    contender = contenders.contender_class(name)(twins.describe(model), mnist)
    contender.train_steps(warmup)
    with tempfile.TemporaryDirectory() as trace:
        tf.profiler.experimental.start(trace)
        start = time.perf_counter()
        contender.train_steps(steps)
        seconds = time.perf_counter() - start
        tf.profiler.experimental.stop()
        found = glob.glob(os.path.join(trace, '**', '*.xplane.pb'), recursive=True)
        if not found:
            raise UserError(f'{name}: the profiler wrote no trace')
        ops = op_times(found[0], steps)
    return {'us_per_step': seconds / steps * 1e6, 'ops_us_per_step': ops}


def markdown(results):
    lines = []
    for model, by_name in results['models'].items():
        names = list(by_name)
        kinds = sorted({k for r in by_name.values() for k in r['ops_us_per_step']},
                       key=lambda k: -max(r['ops_us_per_step'].get(k, 0)
                                          for r in by_name.values()))
        lines += [f'### `{model}`, microseconds per training step', '',
                  '| operation | ' + ' | '.join(names) + ' |', '|---|' + '---:|' * len(names),
                  '| **wall time of a step** | ' + ' | '.join(
                      f"**{by_name[n]['us_per_step']:,.0f}**" for n in names) + ' |',
                  '| all operations, summed over threads | ' + ' | '.join(
                      f"{sum(by_name[n]['ops_us_per_step'].values()):,.0f}" for n in names)
                  + ' |']
        for kind in kinds[:FLAGS.top]:
            lines.append(f'| `{kind}` | ' + ' | '.join(
                f"{by_name[n]['ops_us_per_step'].get(kind, 0):,.0f}" for n in names) + ' |')
        lines.append('')
    return '\n'.join(lines)


def define_flags():
    flags.DEFINE_list('models', ['conv_dropout', 'five_layers_relu'], 'Networks to profile.')
    flags.DEFINE_list('contenders', list(CONTENDERS), 'Who trains (the benchmark\'s names).')
    flags.DEFINE_integer('steps', 100, 'Profiled training steps.', lower_bound=1)
    flags.DEFINE_integer('warmup', 100, 'Steps before profiling.', lower_bound=0)
    flags.DEFINE_integer('top', 25, 'Operation kinds shown per network.', lower_bound=1)
    flags.DEFINE_string('out', None, 'A new directory for profile.json and profile.md '
                        '(default runs/profile-<date>-<time>).')
    flags.DEFINE_string('data_dir', None, 'MNIST directory (default: the per-user cache).')
    flags.DEFINE_string('worker', None, 'Internal: profile this contender, print JSON.')
    flags.DEFINE_string('model', None, 'Internal: the worker\'s network.')


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(profile(FLAGS.worker, FLAGS.model, FLAGS.steps, FLAGS.warmup,
                                 FLAGS.data_dir)))
        return 0
    unknown = sorted(set(FLAGS.models) - set(talk.NETWORKS))
    if unknown:
        raise UserError(f'unknown --models {unknown}; choose from {list(talk.NETWORKS)}')
    for name in FLAGS.contenders:
        try:
            contenders.contender_class(name)
        except KeyError:
            raise UserError(f'unknown contender {name!r}; choose from '
                            f'{list(contenders.WORKERS)}') from None
    out = FLAGS.out or os.path.join('runs', time.strftime('profile-%Y%m%d-%H%M%S'))
    if os.path.exists(out):
        raise UserError(f'{out} exists; choose another --out')
    data.load(FLAGS.data_dir, log=logging.info)
    results = {'machine': machine(), 'command': ' '.join(['python'] + sys.argv),
               'date': time.strftime('%Y-%m-%d'), 'steps': FLAGS.steps, 'models': {}}
    for model in FLAGS.models:
        for name in FLAGS.contenders:  # each in a fresh process, as the benchmark does
            command = [sys.executable, os.path.abspath(__file__), f'--worker={name}',
                       f'--model={model}', f'--steps={FLAGS.steps}',
                       f'--warmup={FLAGS.warmup}']
            if FLAGS.data_dir:
                command.append(f'--data_dir={FLAGS.data_dir}')
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise UserError(f'{model}, {name}: the profile failed: '
                                f'{(done.stderr.strip().splitlines() or ["?"])[-1]}')
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results['models'].setdefault(model, {})[name] = result
            logging.info('%s, %s: %.0f us a step', model, name, result['us_per_step'])
    os.makedirs(out)
    files.write_json(os.path.join(out, 'profile.json'), results)
    text = markdown(results)
    with open(os.path.join(out, 'profile.md'), 'w') as f:
        f.write(f"{results['command']}; commit {results['machine']['commit']}; "
                f"{results['date']}; {results['machine']['cpu']}\n\n{text}\n")
    print(text)
    logging.info('written: %s', out)
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
