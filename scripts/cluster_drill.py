r"""The cluster drill: a network trained by a parameter server and two workers on loopback,
asynchronous and synchronous, beside one machine, and a cluster's everyday faults.

    python scripts/cluster_drill.py
    python scripts/cluster_drill.py --model=conv_dropout --workdir=runs/cluster_drill

Parts (each a real `python -m graph_mnist.train`, the cluster ones through
graph_mnist.cluster's tasks, every process stopped at the end however it ends):
  single    one machine, the same seed: the reference
  async     1 ps + 2 workers, asynchronous updates
  sync      1 ps + 2 workers, --sync_replicas
  alone     1 ps + the chief alone, --overhead_steps: what the variables' and gradients'
            trips over gRPC cost a step, beside one machine's step
  ps_loss   (not by default) only the parameter server killed, at 30% of the steps
  evaluator (not by default) 1 ps + the chief alone + an evaluator task, the chief
            evaluating too (the evaluator's figures against the chief's at the same
            checkpoints) and --nochief_evaluates (the chief's steps per second without
            pausing to evaluate), in turn for --evaluator_rounds rounds
  faults    1 ps + 2 workers, asynchronous, with a worker killed (SIGKILL) at 30% of the
            steps and started again at 35%, the chief killed at 50% and started again
            with --resume, the parameter server killed at 70% (the others must stop by
            themselves with a message) and the whole cluster started again with --resume

The drill runs in a network namespace of its own with loopback only, as graph_mnist.cluster
does (TensorFlow's gRPC servers listen on every interface); --expose_on_network runs it in
the machine's network.

Reported (printed, and drill.json in --workdir, which must not exist): final and best
test accuracy, steps per second of each task and of the run, the checks of each fault
(who stopped, how fast, with what message; the history one continuous sequence).
"""

if __name__ == '__main__':
    import sys

    from graph_mnist import cluster
    if cluster.wants_private_network(sys.argv[1:]):  # TensorFlow listens everywhere
        cluster.in_private_network([sys.executable, *sys.argv])
    from graph_mnist import cli
    cli.before_tensorflow()

import io
import json
import os
import re
import statistics
import subprocess
import sys
import time

from absl import flags
from absl import logging

from graph_mnist import cluster
from graph_mnist import runs
from graph_mnist import talk
from graph_mnist import training_graph
from graph_mnist.errors import UserError

FLAGS = flags.FLAGS
STEP_LINE = re.compile(r'^\s*(\d+): (?:accuracy|\*)')
OWN_STEPS = re.compile(r'(chief|worker \d+): (\d+) steps of its own in ([\d.]+) s')


def define_flags():
    flags.DEFINE_string('workdir', None, 'Where the runs and drill.json go (must not exist; '
                        'default runs/cluster_drill-<date>-<time>).')
    flags.DEFINE_enum('model', 'conv_dropout', list(talk.NETWORKS), 'The network.')
    flags.DEFINE_integer('iterations', None, 'Steps (default: the talk\'s for the model).',
                         lower_bound=100)
    flags.DEFINE_integer('seed', 0, 'The seed of every run.')
    flags.DEFINE_integer('overhead_steps', 2000, 'Steps of the chief-alone part.',
                         lower_bound=100)
    flags.DEFINE_list('parts', ['single', 'async', 'sync', 'alone', 'faults'],
                      'Which parts to run (also: ps_loss, the parameter server killed at 30%% '
                      'alone).')
    flags.DEFINE_bool('expose_on_network', False, 'Run in this machine\'s network rather '
                      'than in a network namespace of its own with loopback only (the '
                      'default): TensorFlow\'s servers then listen on every interface.')
    flags.DEFINE_float('cluster_timeout', 60, 'Given to every task (--cluster_timeout).',
                       lower_bound=5)
    flags.DEFINE_string('data_dir', None, 'MNIST directory (default: the per-user cache).')
    flags.DEFINE_integer('evaluator_rounds', 3, 'Rounds of the evaluator part.', lower_bound=1)
    flags.DEFINE_string('report', None, 'Only add the scaling analysis to this drill.json '
                        '(written by an earlier drill).')


def train_args(workdir, iterations, *more):
    args = [f'--model={FLAGS.model}', f'--iterations={iterations}', f'--seed={FLAGS.seed}',
            f'--workdir={workdir}', '--vis=none', f'--cluster_timeout={FLAGS.cluster_timeout}',
            *more]
    return args + ([f'--data_dir={FLAGS.data_dir}'] if FLAGS.data_dir else [])


def save_logs(workdir, tasks, suffix=''):
    """Each task's output beside the run: <workdir>/logs/<task><suffix>.log."""
    folder = os.path.join(workdir, 'logs')
    os.makedirs(folder, exist_ok=True)
    for task in tasks:
        with open(os.path.join(folder, task.name.replace(' ', '_') + suffix + '.log'), 'a') as f:
            f.writelines(task.lines)


def summary(workdir, tasks=()):
    history = runs.read_history(workdir)
    test = history['test']
    own = {}
    for task in tasks:
        for line in task.lines:
            found = OWN_STEPS.search(line)
            if found:
                own[found[1]] = {'steps': int(found[2]), 'seconds': float(found[3]),
                                 'steps_per_second': int(found[2]) / float(found[3])}
    return {'final_test_accuracy': history['final_test_accuracy'],
            'max_test_accuracy': history['max_test_accuracy'],
            'final_step': history['final_step'], 'wall_time': history['wall_time'],
            'steps_per_second': history['final_step'] / history['wall_time'],
            'status': history['status'], 'tasks': own,
            'continuous': continuous(test['step'])}


def continuous(steps):
    """The evaluated steps strictly increase: nothing evaluated twice, nothing lost."""
    return all(a < b for a, b in zip(steps, steps[1:]))


def single(workdir, iterations):
    command = [sys.executable, '-m', 'graph_mnist.train', *train_args(workdir, iterations)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise UserError(f'the single-machine run failed:\n{done.stderr[-2000:]}')
    return summary(workdir)


def quiet_tasks(configs, args):
    """Tasks whose output is kept, not shown (the drill prints its own lines)."""
    return [cluster.Task(name, tf_config, args, out=io.StringIO()) for name, tf_config in configs]


def on_cluster(workdir, iterations, workers, *more, evaluators=0):
    tasks = quiet_tasks(cluster.plan(1, workers, evaluators=evaluators),
                        train_args(workdir, iterations, *more))
    code = cluster.run(tasks)
    save_logs(workdir, tasks)
    if code != 0:
        chief = next(t for t in tasks if t.name == 'chief')
        raise UserError(f'the cluster run in {workdir} failed ({code}):\n'
                        + ''.join(chief.lines[-20:]))
    return summary(workdir, tasks)


def with_evaluator(workdir, iterations):
    """The chief alone with an evaluator, evaluating itself and not, in turn for
    --evaluator_rounds rounds (the order alternating): the chief's steps per second each
    way, their ratio round by round, and the evaluator's figures against the chief's at
    the checkpoints both measured."""
    import bench_report
    found = {'chief_evaluates': [], 'evaluator_only': []}
    more = {'chief_evaluates': (), 'evaluator_only': ('--nochief_evaluates',)}
    for r in range(FLAGS.evaluator_rounds):
        for part in (list(found) if r % 2 == 0 else list(found)[::-1]):
            run = os.path.join(workdir, f'{part}_{r + 1}')
            result = on_cluster(run, iterations, 1, *more[part], evaluators=1)
            evaluator = runs.read_history(os.path.join(run, 'evaluator'))
            chief = dict(zip(runs.read_history(run)['test']['step'],
                             runs.read_history(run)['test']['accuracy']))
            same = [(a, chief[s]) for s, a in zip(evaluator['test']['step'],
                                                   evaluator['test']['accuracy'])
                    if s in chief]
            result['evaluator'] = {
                'evaluations': len(evaluator['test']['step']),
                'final_step': evaluator.get('final_step'),
                'final_test_accuracy': evaluator.get('final_test_accuracy'),
                'steps_also_measured_by_the_chief': len(same),
                'largest_difference': max((abs(a - b) for a, b in same), default=None)}
            found[part].append(result)
    ratios = [b['tasks']['chief']['steps_per_second'] / a['tasks']['chief']['steps_per_second']
              for a, b in zip(found['chief_evaluates'], found['evaluator_only'])]
    low, high, coverage = bench_report.median_interval(ratios)
    found['chief_steps_per_second_ratio'] = {
        'rounds': ratios, 'median': statistics.median(ratios), 'low': low, 'high': high,
        'coverage': coverage}
    return found


def latest_step(task):
    for line in reversed(task.lines):
        found = STEP_LINE.match(line.split(' ', 2)[-1]) if line[:2] in ('I ', 'W ') else None
        if found:
            return int(found[1])
    return -1


def wait_for(task, step, timeout=1800):
    deadline = time.monotonic() + timeout
    while latest_step(task) < step:
        if task.process.poll() is not None or time.monotonic() > deadline:
            raise UserError(f'{task.name} ended or stalled before step {step}:\n'
                            + ''.join(task.lines[-15:]))
        time.sleep(0.2)
    return latest_step(task)


def faults(workdir, iterations):
    """One asynchronous run through a worker, the chief and the ps killed."""
    configs = dict(cluster.plan(1, 2))
    args = train_args(workdir, iterations)
    report, started = {}, []

    def start(name, *more):
        task = cluster.Task(name, configs[name], args + list(more), out=io.StringIO()).start()
        started.append(task)
        return task
    try:
        ps, chief, worker = start('ps 0'), start('chief'), start('worker 0')
        # a worker killed: the others go on; started again, it joins the run
        at = wait_for(chief, int(0.30 * iterations))
        worker.process.kill()
        report['worker_killed_at'] = at
        report['chief_went_on_to'] = wait_for(chief, int(0.35 * iterations))
        worker = start('worker 0')
        # the chief killed: started again with --resume, from its last checkpoint
        at = wait_for(chief, int(0.50 * iterations))
        chief.process.kill()
        chief.process.wait()
        report['chief_killed_at'] = at
        report['checkpoint_resumed'] = runs_checkpoint(workdir)
        chief = start('chief', '--resume')
        report['chief_resumed_to'] = wait_for(chief, int(0.70 * iterations))
        report['restarted_worker_steps'] = max(
            [int(m[1]) for m in (re.search(r'worker 0: (\d+) steps, global step', line)
                                 for line in worker.lines) if m] or [0])
        # the parameter server killed: the others stop by themselves, with a message
        report['ps_killed'] = lose(ps, (chief, worker))
        report['checkpoint_after_ps_loss'] = runs_checkpoint(workdir)
        # the whole cluster again, the chief with --resume
        tasks = [cluster.Task(name, tf_config, args + (['--resume'] if name == 'chief' else []),
                              out=io.StringIO())
                 for name, tf_config in cluster.plan(1, 2)]
        code = cluster.run(tasks)
        save_logs(workdir, tasks, '-restarted')
        report['restarted_exit_code'] = code
        report.update(summary(workdir, tasks))
        return report
    finally:
        for task in started:
            task.stop()
        save_logs(workdir, started)


def lose(ps, others):
    """Kills the parameter server; how each other task stopped (code, seconds, message)."""
    killed = time.monotonic()
    ps.process.kill()
    stopped = {}
    for task in others:
        try:
            task.process.wait(FLAGS.cluster_timeout + 60)
        except subprocess.TimeoutExpired:
            pass  # a hang: reported as such, stopped by the caller
        stopped[task.name] = {'exit_code': task.process.poll(),
                              'seconds_to_stop': round(time.monotonic() - killed, 1),
                              'message': next((line.strip() for line in task.lines
                                               if line.startswith('E ')), None)}
    return stopped


def ps_loss(workdir, iterations):
    """Only the parameter server's loss, at 30% of the steps (what the tests run)."""
    configs = dict(cluster.plan(1, 2))
    tasks = [cluster.Task(name, configs[name], train_args(workdir, iterations),
                          out=io.StringIO()).start() for name in ('ps 0', 'chief', 'worker 0')]
    try:
        at = wait_for(tasks[1], int(0.30 * iterations))
        return {'ps_killed_at': at, 'ps_killed': lose(tasks[0], tasks[1:]),
                'checkpoint_after_ps_loss': runs_checkpoint(workdir)}
    finally:
        for task in tasks:
            task.stop()
        save_logs(workdir, tasks)


def runs_checkpoint(workdir):
    from graph_mnist import checkpoints
    found = checkpoints.latest(workdir)
    return found[1] if found else None


def scaling(results):
    """Where a step's time goes, from the parts' figures: what the chief-alone cluster adds
    to one machine's step is the trips to the parameter server (the variables read, the
    gradients sent: each the size of the parameters, float32)."""
    g = training_graph.build(results['model'])
    parameters = g.parameters
    out = {'parameters': parameters, 'bytes_each_way_per_step': 4 * parameters}
    if 'single' in results and 'alone' in results:
        single_ms = 1000 / results['single']['steps_per_second']
        alone_ms = 1000 / results['alone']['steps_per_second']
        out.update(single_step_ms=single_ms, alone_step_ms=alone_ms,
                   traffic_ms_per_step=alone_ms - single_ms,
                   loopback_megabytes_per_second=2 * 4 * parameters / 1e6 / (
                       max(alone_ms - single_ms, 1e-3) / 1000))
    for part in ('async', 'sync'):
        if part in results and 'single' in results:
            out[f'{part}_speedup'] = (results[part]['steps_per_second']
                                      / results['single']['steps_per_second'])
    return out


def main(argv):
    del argv
    if FLAGS.report:  # the analysis again, from a drill's drill.json
        with open(FLAGS.report) as f:
            results = json.load(f)
        results['scaling'] = scaling(results)
        print(json.dumps(results['scaling'], indent=1))
        with open(FLAGS.report, 'w') as f:
            json.dump(results, f, indent=1)
        return 0
    workdir = FLAGS.workdir or runs.new_dir('cluster_drill')
    if os.path.exists(workdir):
        raise UserError(f'{workdir} exists; choose another --workdir')
    os.makedirs(workdir)
    iterations = FLAGS.iterations or talk.NETWORKS[FLAGS.model].iterations
    results = {'command': ' '.join(['python', 'scripts/cluster_drill.py'] + sys.argv[1:]),
               'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'model': FLAGS.model,
               'iterations': iterations, 'seed': FLAGS.seed}
    from graph_mnist.machine import machine
    results['machine'] = machine()
    parts = {
        'single': lambda d: single(d, iterations),
        'async': lambda d: on_cluster(d, iterations, 2),
        'sync': lambda d: on_cluster(d, iterations, 2, '--sync_replicas'),
        'alone': lambda d: on_cluster(d, FLAGS.overhead_steps, 1),
        'faults': lambda d: faults(d, iterations),
        'ps_loss': lambda d: ps_loss(d, iterations),
        'evaluator': lambda d: with_evaluator(d, iterations),
    }
    for part in FLAGS.parts:
        if part not in parts:
            raise UserError(f'--parts: {part} is not one of {list(parts)}')
    for part in FLAGS.parts:
        logging.info('%s ...', part)
        began = time.monotonic()
        results[part] = parts[part](os.path.join(workdir, part))
        results[part]['drill_seconds'] = round(time.monotonic() - began, 1)
        shown = {k: v for k, v in results[part].items() if k != 'tasks'}
        logging.info('%s: %s', part, json.dumps(shown))
        for name, own in results[part].get('tasks', {}).items():
            logging.info('  %s: %d steps, %.1f steps/s', name, own['steps'],
                         own['steps_per_second'])
        with open(os.path.join(workdir, 'drill.json'), 'w') as f:
            json.dump(results, f, indent=1)
    results['scaling'] = scaling(results)
    logging.info('scaling: %s', json.dumps(results['scaling']))
    with open(os.path.join(workdir, 'drill.json'), 'w') as f:
        json.dump(results, f, indent=1)
    print(f'written: {os.path.join(workdir, "drill.json")}')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
