r"""Training throughput of the networks: graph_mnist's loop against Keras and PyTorch,
each contender in a fresh process of its own.

    python scripts/benchmark.py --models=conv_dropout --repeats=5
    python scripts/benchmark.py --models=all --time_to_99 --readme_command --json=runs/b.json
    python scripts/benchmark.py \
        --contenders=ours,keras_spe,ours@avx2,keras_spe@avx2,ours@onednn_off

For each network, --repeats rounds; in each round every contender runs once, in a new
process (`scripts/benchmark.py --worker=...`), the order rotated from round to round, so
that machine noise hits all alike and no library can crash or slow another (TensorFlow
and PyTorch in one process have crashed). A process builds its network, trains
--warmup steps, times 50 steps to learn its pace, then times --windows windows of about
--window_seconds each (a whole number of 50 steps): its figure is its median window,
so a stall in one window moves nothing (every window is kept in the JSON). Reported
per contender: the median of its processes' figures in images per second and their
spread, (max - min) / median; a ratio whose either side spreads more than 10% says so.

Contenders (scripts/bench_contenders.py): ours (graph_mnist's training step; also its
evaluation of the 10,000 test images, --eval_batches images per Session.run); keras,
keras_spe, keras_xla (the Keras 3 twin: fit as users call it, steps_per_execution=50,
XLA; Keras is reported at the fastest of the three, so that our lead is not a weak
opponent's); torch (the PyTorch twin, if installed). Any of them with a suffix runs
with settings of its own: @onednn_off (TF_ENABLE_ONEDNN_OPTS=0; --onednn=both adds
those for ours and Keras), @avx2 (ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's code for a CPU
without AVX-512, on this one). The twins are built from the network's description read
off its graph in this process (graph_mnist.styles.twins), so the PyTorch process never
imports TensorFlow.
Also: the float32 matrix-multiply peak (numpy, its own process), the achieved GFLOP/s
(architecture.training_flops_per_image), the start-up of `python -m graph_mnist.train`; with
--time_to_99, wall time to 99% test accuracy (evaluations every 100 steps included) for
ours and Keras per seed (Keras in one fit call over whole epochs, evaluating in a
callback); with --readme_command, the wall time of README's first command; with
--run_parts, the same without the dashboard and without the evaluations. Every result
records the machine: CPU model, vector extensions, cores, the versions of TensorFlow,
Keras, PyTorch, numpy, and the commit.
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
import time

from absl import app
from absl import flags
from absl import logging
import bench_contenders as contenders
from bench_contenders import CONTENDERS
from bench_contenders import STEP_QUANTUM
from bench_contenders import WINDOW_SECONDS
from bench_contenders import WINDOWS
from bench_contenders import WORKERS
from bench_contenders import contender_class
from bench_contenders import timed
from bench_contenders import work
from bench_report import PAIRS
from bench_report import RUN_PARTS
from bench_report import best_keras
from bench_report import markdown
from bench_report import pairs
from bench_report import ratio_text
from bench_report import summarize

from graph_mnist import data
from graph_mnist import files
from graph_mnist import runs
from graph_mnist.errors import UserError
from graph_mnist.machine import machine
from graph_mnist.styles import twins

# a contender's suffix, e.g. ours@onednn_off or keras_spe@avx2: what its process runs with
SETTINGS = {
    'onednn_off': {'TF_ENABLE_ONEDNN_OPTS': '0'},  # TensorFlow's own (Eigen) kernels
    'avx2': {'ONEDNN_MAX_CPU_ISA': 'AVX2'},  # oneDNN's code for a CPU without AVX-512
}


def known(name):
    """Whether contender `name` exists, suffixes and all."""
    try:
        contender_class(name)
    except KeyError:
        return False
    return set(name.split('@')[1:]) <= set(SETTINGS)




def worker_environment(name, base=None):
    """The environment of contender `name`'s process: this one's, plus its suffixes'."""
    env = dict(os.environ if base is None else base)
    for suffix in name.split('@')[1:]:
        env.update(SETTINGS[suffix])
    return env


def run_worker(name, task, description_path, seed=0, data_dir=None, timeout=3600,
               warmup=STEP_QUANTUM, window_seconds=WINDOW_SECONDS, windows=WINDOWS,
               eval_batches=(10000,)):
    """Runs one contender in a fresh process: its result, or {'crashed': why}."""
    env = worker_environment(name)
    command = [sys.executable, os.path.abspath(__file__), f'--worker={name}', f'--task={task}',
               f'--description={description_path}', f'--warmup={warmup}', f'--seed={seed}',
               f'--window_seconds={window_seconds}', f'--windows={windows}',
               '--eval_batches=' + ','.join(map(str, eval_batches))]
    if data_dir:
        command.append(f'--data_dir={data_dir}')
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'crashed': f'no answer within {timeout} s'}
    if done.returncode != 0:
        how = f'killed by {_signal_name(-done.returncode)}' if done.returncode < 0 else \
            f'exit {done.returncode}'
        last = (done.stderr.strip().splitlines() or [''])[-1][:200]
        return {'crashed': f'{how}' + (f': {last}' if last else '')}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _signal_name(number):
    import signal
    try:
        return signal.Signals(number).name
    except ValueError:
        return f'signal {number}'


def measure(model, contenders, repeats, data_dir=None, log=print, eval_batches=(10000,),
            **timing):
    """Every contender, `repeats` rounds, one fresh process per timing, order rotated;
    `timing`: warmup, window_seconds, windows (work's)."""
    description = twins.describe(model)
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(description, f)
    try:
        timings = {name: [] for name in contenders}
        process_windows = {name: [] for name in contenders}
        evaluations = {}  # ours' evaluation cost per batch size, one dict per process
        extra, failed = {}, {}
        for round_ in range(repeats):
            shift = round_ % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:
                if name in failed:
                    continue  # crashed or unavailable once: reported, not retried
                result = run_worker(name, 'throughput', f.name, data_dir=data_dir,
                                    eval_batches=eval_batches, **timing)
                if 'seconds_per_step' in result:
                    timings[name].append(result['seconds_per_step'])
                    process_windows[name].append(result['windows'])
                    if 'eval_ms_by_batch' in result:
                        evaluations.setdefault(name, []).append(result['eval_ms_by_batch'])
                    extra[name] = result
                else:
                    failed[name] = result
                    log(f'{model}: {name}: {result}')
    finally:
        os.remove(f.name)
    measured = {}
    for name in contenders:
        if name in failed:
            measured[name] = failed[name]
        else:
            measured[name] = {**summarize(timings[name]),
                              'windows': process_windows[name],
                              'steps_per_window': extra[name]['steps_per_window'],
                              'parameters': extra[name]['parameters']}
            if name in evaluations:  # median over the processes of their medians
                by_batch = {batch: statistics.median(e[batch] for e in evaluations[name])
                            for batch in evaluations[name][0]}
                measured[name]['eval_ms_by_batch'] = by_batch
                measured[name]['eval_ms'] = by_batch[str(eval_batches[0])]
    keras_name, _ = best_keras(measured)
    flops = description['training_flops_per_image']
    return {'contenders': measured, 'keras_best': keras_name,
            **pairs(measured, keras_name),
            'training_mflop_per_image': flops / 1e6,
            'achieved_gflops': {name: r['images_per_second'] * flops / 1e9
                                for name, r in measured.items() if 'images_per_second' in r}}


def startup_seconds(model, data_dir):
    """Process start to training loop start, for `python -m graph_mnist.train`."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, 'run')
        command = [sys.executable, '-m', 'graph_mnist.train', f'--model={model}',
                   '--iterations=1', '--vis=none', f'--workdir={workdir}']
        if data_dir:
            command.append(f'--data_dir={data_dir}')
        launched = time.time()
        subprocess.run(command, check=True, capture_output=True)
        return runs.read_history(workdir)['loop_started_at'] - launched


def readme_command_seconds(data_dir, extra=()):
    """Wall time of README's first command's training (`python -m graph_mnist.train
    --model=conv_dropout`, as a user runs it, headless: the dashboard saved), and the
    run's own figures; `extra`: flags added to it."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, '-m', 'graph_mnist.train', '--model=conv_dropout',
                   *extra]
        if data_dir:
            command.append(f'--data_dir={data_dir}')
        env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
        seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True,
                                                cwd=tmp, env=env))
        history = runs.read_history(os.path.join(tmp, runs.RUNS, runs.LATEST))
    return {'seconds': seconds, 'wall_time': history['wall_time'],
            'final_test_accuracy': history['final_test_accuracy']}



FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list('models', ['conv_dropout'], 'Networks to measure (or "all").')
    flags.DEFINE_list('contenders', list(CONTENDERS), 'Who trains: ' + ', '.join(WORKERS)
                      + '; any with suffixes that set its process\'s environment: '
                      + ', '.join(f'@{k} ({v})' for k, v in SETTINGS.items()) + '.')
    flags.DEFINE_enum('onednn', 'on', ['on', 'off', 'both'], 'oneDNN for the TensorFlow '
                      'contenders (ours, Keras): on (TensorFlow\'s default), off, or both.')
    flags.DEFINE_float('window_seconds', WINDOW_SECONDS, 'About how long each timed '
                       'window lasts (its steps a multiple of %d, from the pace of %d '
                       'steps timed first).' % (STEP_QUANTUM, STEP_QUANTUM), lower_bound=0)
    flags.DEFINE_integer('windows', WINDOWS, 'Timed windows per process; the process\'s '
                         'figure is their median.', lower_bound=1)
    flags.DEFINE_integer('repeats', 5, 'Processes per contender (rounds), each timed '
                         'once.', lower_bound=1)
    flags.DEFINE_integer('warmup', STEP_QUANTUM, 'Steps before timing.', lower_bound=0)
    flags.DEFINE_string('json', None, 'Also write the results here as JSON (a new file).')
    flags.DEFINE_bool('time_to_99', False, 'Also measure conv_dropout\'s time to 99% test '
                      'accuracy, ours against Keras (its faster mode).')
    flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds for --time_to_99.')
    flags.DEFINE_bool('readme_command', False, 'Also time README\'s first command.')
    flags.DEFINE_bool('run_parts', False, 'Also time README\'s first command with '
                      '--vis=none, and with --vis=none --eval_every=10000: what the '
                      'dashboard and the test evaluations cost in a whole run.')
    flags.DEFINE_list('eval_batches', ['10000'], 'Test images per Session.run when ours\' '
                      'processes time an evaluation of all 10,000; several: each is timed.')
    flags.DEFINE_string('data_dir', None, 'MNIST directory.')
    # a worker process (started by this script itself)
    flags.DEFINE_string('worker', None, 'Internal: run one contender and print its result.')
    flags.DEFINE_enum('task', 'throughput', ['throughput', 'time_to_99'], 'Internal.')
    flags.DEFINE_string('description', None, 'Internal: the network, as JSON.')
    flags.DEFINE_integer('seed', 0, 'Internal: the worker\'s seed.')


def timing_from_flags():
    return {'warmup': FLAGS.warmup, 'window_seconds': FLAGS.window_seconds,
            'windows': FLAGS.windows}


def eval_batches():
    try:
        batches = [int(b) for b in FLAGS.eval_batches]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise app.UsageError(f'--eval_batches={",".join(FLAGS.eval_batches)}: give positive '
                             'whole numbers, e.g. 10000,1000,500')
    return batches


def contenders_from_flags():
    chosen = list(FLAGS.contenders)
    unknown = [c for c in chosen if not known(c)]
    if unknown:
        raise app.UsageError(f'unknown --contenders {unknown}; choose from {list(WORKERS)}, '
                             f'each with any suffixes of {["@" + s for s in SETTINGS]}')
    tf_side = [c for c in chosen
               if issubclass(contender_class(c), (contenders.Ours, contenders.Keras))]
    if FLAGS.onednn == 'off':
        chosen = [c + '@onednn_off' if c in tf_side else c for c in chosen]
    elif FLAGS.onednn == 'both':
        chosen += [c + '@onednn_off' for c in tf_side]
    return chosen


def main(argv):
    del argv
    if FLAGS.worker:  # one contender, in this fresh process
        description = None
        if FLAGS.description:
            with open(FLAGS.description) as f:
                description = json.load(f)
        print(json.dumps(work(FLAGS.worker, FLAGS.task, description, FLAGS.seed,
                              FLAGS.data_dir, **timing_from_flags(),
                              eval_batches=eval_batches())))
        return 0
    from graph_mnist import talk
    names = list(talk.NETWORKS) if FLAGS.models == ['all'] else FLAGS.models
    unknown = sorted(set(names) - set(talk.NETWORKS))
    if unknown:
        raise app.UsageError(f'unknown --models {unknown}; choose from {list(talk.NETWORKS)}')
    if FLAGS.json and os.path.exists(FLAGS.json):
        raise UserError(f'{FLAGS.json} already exists; choose another --json')
    contenders = contenders_from_flags()
    eval_batches()  # checked before any timing
    data.load(FLAGS.data_dir, log=logging.info)  # fetched once, before any timing
    results = {'machine': machine(), 'command': ' '.join(['python'] + sys.argv),
               'date': time.strftime('%Y-%m-%d'), 'repeats': FLAGS.repeats,
               **timing_from_flags(), 'models': {}}
    peak = run_worker('matmul', 'throughput', '')
    if 'gflops' not in peak:
        raise UserError(f'the matrix-multiply measurement failed: {peak}')
    results['peak_gflops'] = peak['gflops']
    logging.info('float32 matrix multiply peak: %.0f GFLOP/s', results['peak_gflops'])
    for model in names:
        row = measure(model, contenders, FLAGS.repeats, FLAGS.data_dir, log=logging.warning,
                      eval_batches=eval_batches(), **timing_from_flags())
        row['startup_s'] = startup_seconds(model, FLAGS.data_dir)
        results['models'][model] = row
        logging.info('%s: %s', model, ', '.join(f'{key} {ratio_text(row[key])}'
                                                for key in PAIRS))
    if FLAGS.time_to_99:
        keras_mode = results['models'].get('conv_dropout', {}).get('keras_best') or 'keras'
        description = twins.describe('conv_dropout')
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(description, f)
        results['time_to_99'] = {}
        for i, seed in enumerate(map(int, FLAGS.seeds)):
            order = ('ours', 'ours_loop', keras_mode)
            for name in order[i % 3:] + order[:i % 3]:  # rotated from seed to seed
                result = run_worker(name, 'time_to_99', f.name, seed=seed,
                                    data_dir=FLAGS.data_dir)
                results['time_to_99'].setdefault(name, []).append({'seed': seed, **result})
                logging.info('time to 99%%, %s, seed %d: %s', name, seed, result)
        os.remove(f.name)
    if FLAGS.run_parts:
        results['run_parts'] = {name: readme_command_seconds(FLAGS.data_dir, extra)
                                for name, extra in RUN_PARTS.items()}
    if FLAGS.readme_command:  # run once: the first of the parts is the command as it is
        results['readme_command'] = results['run_parts']['readme_command'] \
            if FLAGS.run_parts else readme_command_seconds(FLAGS.data_dir)
    print(markdown(results))
    if FLAGS.json:
        files.write_json(FLAGS.json, results)
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
