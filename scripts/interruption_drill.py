"""The interruption drill: a run stopped by Ctrl-C, then killed with kill -9, finishes.

    python scripts/interruption_drill.py --workdir=results/interruption_drill

Trains --model (conv_dropout) in one workdir: sends SIGINT once the test evaluation of
step --sigint_at is written, resumes, sends SIGKILL once step --kill_at is written,
resumes again to the end. Then checks the metrics history (every step once, no gap, no
duplicate) and prints the final test accuracy beside an uninterrupted run's, if
--reference (a history.json) is given. Writes drill.json into the workdir.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'conv_dropout', 'Network to train.')
flags.DEFINE_string('workdir', 'results/interruption_drill', 'The run\'s directory (emptied).')
flags.DEFINE_integer('sigint_at', 3000, 'Send SIGINT after this step\'s evaluation.')
flags.DEFINE_integer('kill_at', 6500, 'Send SIGKILL after this step\'s evaluation.')
flags.DEFINE_string('reference', None, 'history.json of an uninterrupted run, same seed.')


def history():
    try:
        with open(os.path.join(FLAGS.workdir, 'history.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def start(resume):
    command = [sys.executable, '-m', 'graph_mnist.train', f'--model={FLAGS.model}',
               '--vis=none', f'--workdir={FLAGS.workdir}'] + (['--resume'] if resume else [])
    log = open(os.path.join(os.path.dirname(FLAGS.workdir) or '.',
                            f'{os.path.basename(FLAGS.workdir)}.log'), 'a')
    return subprocess.Popen(command, stdout=log, stderr=log)


def wait_for_step(process, step):
    while process.poll() is None:
        h = history()
        if h and h['test']['step'] and h['test']['step'][-1] >= step:
            return h['test']['step'][-1]
        time.sleep(0.1)
    raise RuntimeError(f'the run ended (exit {process.returncode}) before step {step}')


def latest_checkpoint_step():
    with open(os.path.join(FLAGS.workdir, 'checkpoints', 'checkpoint')) as f:
        return int(f.readline().split('-')[-1].strip().strip('"'))


def main(argv):
    del argv
    if os.path.exists(FLAGS.workdir):
        shutil.rmtree(FLAGS.workdir)
    events = []
    start_time = time.perf_counter()

    for resume, at, sent in ((False, FLAGS.sigint_at, signal.SIGINT),
                             (True, FLAGS.kill_at, signal.SIGKILL)):
        process = start(resume)
        seen = wait_for_step(process, at)
        process.send_signal(sent)
        code = process.wait()
        saved = latest_checkpoint_step()
        events.append({'signal': sent.name, 'history_at': seen, 'exit': code,
                       'checkpoint': saved})
        print(f'{sent.name} after the evaluation of step {seen}: exit {code}, latest '
              f'checkpoint at step {saved}', flush=True)

    code = start(resume=True).wait()
    final = history()
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
    with open(os.path.join(FLAGS.workdir, 'drill.json'), 'w') as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return 0 if code == 0 and report['train_steps_continuous'] and \
        report['test_steps_continuous'] else 1


if __name__ == '__main__':
    app.run(main)
