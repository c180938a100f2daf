"""The interruption drill: a run stopped by Ctrl-C, then killed with kill -9, finishes.

    python scripts/interruption_drill.py \
        --reference=results/talk_comparison/runs/conv_dropout-it10000-seed0/history.json

Trains --model (conv_dropout) in one workdir: sends SIGINT once the test evaluation of
step --sigint_at is written, resumes, sends SIGKILL once step --kill_at is written,
resumes again to the end. Then checks the metrics history (every step once, no gap, no
duplicate) and prints the final test accuracy beside an uninterrupted run's, if
--reference (a history.json) is given. Writes drill.json and the runs' log, train.log,
into --workdir (default runs/interruption_drill-<date>-<time>; an existing one is
refused, never emptied).
"""

import json
import os
import signal
import subprocess
import sys
import time

from absl import flags

from graph_mnist import files
from graph_mnist import runs
from graph_mnist.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('model', 'conv_dropout', 'Network to train.')
    flags.DEFINE_string('workdir', None, 'The run\'s directory, new (default '
                        'runs/interruption_drill-<date>-<time>).')
    flags.DEFINE_integer('sigint_at', 3000, 'Send SIGINT after this step\'s evaluation.')
    flags.DEFINE_integer('kill_at', 6500, 'Send SIGKILL after this step\'s evaluation.')
    flags.DEFINE_string('reference', None, 'history.json of an uninterrupted run, same seed.')


def history(workdir):
    try:
        return runs.read_history(workdir)
    except runs.WorkdirError:  # not written yet
        return None


def start(workdir, resume):
    command = [sys.executable, '-m', 'graph_mnist.train', f'--model={FLAGS.model}',
               '--vis=none', f'--workdir={workdir}'] + (['--resume'] if resume else [])
    with open(os.path.join(workdir, 'train.log'), 'a') as log:  # the child keeps its copy
        return subprocess.Popen(command, stdout=log, stderr=log)


def wait_for_step(workdir, process, step):
    while process.poll() is None:
        h = history(workdir)
        if h and h['test']['step'] and h['test']['step'][-1] >= step:
            return h['test']['step'][-1]
        time.sleep(0.1)
    raise UserError(f'the run ended (exit {process.returncode}) before step {step}')


def latest_checkpoint_step(workdir):
    with open(os.path.join(workdir, 'checkpoints', 'checkpoint')) as f:
        return int(f.readline().split('-')[-1].strip().strip('"'))


def main(argv):
    del argv
    workdir = runs.make_new_dir(FLAGS.workdir, 'interruption_drill')
    events = []
    start_time = time.perf_counter()

    for resume, at, sent in ((False, FLAGS.sigint_at, signal.SIGINT),
                             (True, FLAGS.kill_at, signal.SIGKILL)):
        process = start(workdir, resume)
        seen = wait_for_step(workdir, process, at)
        process.send_signal(sent)
        code = process.wait()
        saved = latest_checkpoint_step(workdir)
        events.append({'signal': sent.name, 'history_at': seen, 'exit': code,
                       'checkpoint': saved})
        print(f'{sent.name} after the evaluation of step {seen}: exit {code}, latest '
              f'checkpoint at step {saved}', flush=True)

    code = start(workdir, resume=True).wait()
    final = history(workdir)
    train_steps, test_steps = final['train']['step'], final['test']['step']
    last = final['iterations']
    report = {
        'events': events, 'last_exit': code, 'status': final['status'],
        'final_test_accuracy': final['final_test_accuracy'],
        'max_test_accuracy': final['max_test_accuracy'],
        'train_steps_continuous': train_steps == list(range(0, last, 20)),
        'test_steps_continuous': test_steps == list(range(0, last, 100)) + [last],
        'duplicates': len(train_steps) - len(set(train_steps))
        + len(test_steps) - len(set(test_steps)),
        'drill_seconds': time.perf_counter() - start_time,
    }
    if FLAGS.reference:
        with open(FLAGS.reference) as f:
            reference = json.load(f)
        report['uninterrupted_final_test_accuracy'] = reference['final_test_accuracy']
        report['uninterrupted_max_test_accuracy'] = reference['max_test_accuracy']
    files.write_json(os.path.join(workdir, 'drill.json'), report)
    print(json.dumps(report, indent=1))
    return 0 if code == 0 and report['train_steps_continuous'] and \
        report['test_steps_continuous'] else 1


if __name__ == '__main__':
    from graph_mnist import cli
    cli.run(main, define_flags)
