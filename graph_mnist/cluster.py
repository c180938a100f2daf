r"""Starts a training cluster on this machine: parameter servers and workers on loopback.

    python -m graph_mnist.cluster --ps=1 --workers=2 -- --model=conv_dropout --workdir=runs/cluster
    python -m graph_mnist.cluster --workers=2 -- --model=conv_dropout --sync_replicas

Everything after `--` is given to every task's `python -m graph_mnist.train`. The
launcher picks free ports on 127.0.0.1, writes each task's TF_CONFIG (the first of the
--workers is the chief), starts the processes, shows their logs line by line with the
task's name in front, and exits with the chief's exit code once the chief has ended and
the others have followed. Ctrl-C asks the chief to save a checkpoint and stop
(`--resume` goes on from there) and stops every other task, and so does SIGTERM; a task
whose launcher is gone (even by SIGKILL) stops by itself: nothing is left running.

TensorFlow's gRPC servers listen on every interface, whatever address TF_CONFIG names:
--private_network runs the whole cluster in a network namespace of its own with loopback
only (the tests and the drill do), unreachable from outside.

On several machines, run the same `python -m graph_mnist.train` on each with its own
TF_CONFIG (README: "Train on a cluster").
"""

import os
import shutil
import sys

PRIVATE = 'GRAPH_MNIST_PRIVATE_NETWORK'  # set inside the private network


def in_private_network(argv):
    """Runs `argv` again (os.exec: the same process, its signals and exit code) in a
    network namespace of its own whose only interface is loopback, up; the processes it
    starts share it. TensorFlow's gRPC servers listen on every interface (0.0.0.0 is
    hard-coded in TensorFlow), whatever host TF_CONFIG names: so that a cluster on one
    machine cannot be reached from outside, it runs here (Linux: unshare and ip)."""
    if os.environ.get(PRIVATE):
        return
    missing = [tool for tool in ('unshare', 'ip') if shutil.which(tool) is None]
    if missing:
        sys.exit(f'E --private_network needs {" and ".join(missing)} (util-linux, iproute2)')
    os.environ[PRIVATE] = '1'
    os.execvp('unshare', ['unshare', '--net', '--map-root-user', '--', 'sh', '-c',
                          'ip link set lo up && exec "$0" "$@"', *argv])


def asks_private_network(argv):
    """--private_network among the launcher's own flags (before --)."""
    own = argv[:argv.index('--')] if '--' in argv else argv
    return any(a in ('--private_network', '--private_network=true') for a in own)


if __name__ == '__main__':
    if asks_private_network(sys.argv[1:]):  # before anything else holds a descriptor
        in_private_network([sys.executable, '-m', 'graph_mnist.cluster', *sys.argv[1:]])
    from graph_mnist import cli
    cli.before_tensorflow()

import json
import signal
import socket
import subprocess
import threading
import time

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
CHIEF_GRACE_SECONDS = 15  # for the others to end by themselves once the chief has
LAUNCHER = 'GRAPH_MNIST_LAUNCHER'  # its pid, in each task's environment (see distributed)


def free_ports(count, host='127.0.0.1'):
    """`count` ports free on `host` right now (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def plan(ps, workers, host='127.0.0.1'):
    """[(task name, TF_CONFIG)] of a cluster: a chief, workers - 1 workers, ps servers."""
    ports = iter(free_ports(ps + workers, host))
    cluster = {'chief': [f'{host}:{next(ports)}'],
               'worker': [f'{host}:{next(ports)}' for _ in range(workers - 1)],
               'ps': [f'{host}:{next(ports)}' for _ in range(ps)]}
    if not cluster['worker']:
        del cluster['worker']
    tasks = [('ps', i) for i in range(ps)] + [('chief', 0)] + \
        [('worker', i) for i in range(workers - 1)]
    return [(('chief' if kind == 'chief' else f'{kind} {index}'),
             json.dumps({'cluster': cluster, 'task': {'type': kind, 'index': index}}))
            for kind, index in tasks]


class Task:
    """One task's process, its output shown line by line behind its name."""

    def __init__(self, name, tf_config, train_args, out=None):
        self.name, self.tf_config, self.train_args = name, tf_config, list(train_args)
        self.out = out or sys.stdout
        self.lines = []
        self.process = None

    def start(self):
        env = dict(os.environ, TF_CONFIG=self.tf_config, **{LAUNCHER: str(os.getpid())})
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'graph_mnist.train', *self.train_args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # Ctrl-C reaches the launcher, which decides
        self.reader = threading.Thread(target=self.show, args=(self.process,), daemon=True)
        self.reader.start()
        return self

    def show(self, process):
        for line in process.stdout:
            self.lines.append(line)
            self.out.write(f'[{self.name}] {line}')
            self.out.flush()

    def signal(self, signum):
        if self.process and self.process.poll() is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        """SIGTERM (a chief or worker saves nothing then; a ps just ends), then SIGKILL."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.process.kill()
                self.process.wait()
        self.reader.join(5)
        return self.process.returncode


def run(tasks, poll=0.2):
    """Starts `tasks`, waits for the chief, stops the others; the chief's exit code.
    Ctrl-C: SIGINT to the chief (it checkpoints and stops), the others stopped."""
    chief = next(t for t in tasks if t.name == 'chief')
    interrupted = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: interrupted.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for task in tasks:
            task.start()
        asked = False
        while chief.process.poll() is None:
            if interrupted.is_set() and not asked:
                logging.warning('stopping: the chief saves a checkpoint and stops; then '
                                'every task stops')
                chief.signal(signal.SIGINT)
                asked = True
            time.sleep(poll)
        deadline = time.monotonic() + (1 if interrupted.is_set() else CHIEF_GRACE_SECONDS)
        for task in tasks:
            if task is not chief:
                task.wait(max(0.1, deadline - time.monotonic()))
    finally:
        for task in tasks:
            if task.process is not None:
                task.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    code = chief.process.returncode
    return 130 if code in (-signal.SIGINT, -signal.SIGTERM) else code


def define_flags():
    flags.DEFINE_integer('ps', 1, 'Parameter servers.', lower_bound=1, upper_bound=16)
    flags.DEFINE_integer('workers', 2, 'Training tasks, the chief included.', lower_bound=1,
                         upper_bound=16)
    flags.DEFINE_string('host', '127.0.0.1', 'The address the tasks name in TF_CONFIG.')
    flags.DEFINE_bool('private_network', False, 'Run every task in a network namespace of '
                      'its own with loopback only (Linux: unshare, ip): TensorFlow\'s gRPC '
                      'servers listen on every interface, whatever --host says.')


def main(argv):
    train_args = argv[1:]
    if any(a.split('=')[0] in ('--helpfull', '--help') for a in train_args):
        raise app.UsageError('the flags after -- are graph_mnist.train\'s: python -m '
                             'graph_mnist.train --helpfull')
    tasks = [Task(name, tf_config, train_args) for name, tf_config in
             plan(FLAGS.ps, FLAGS.workers, FLAGS.host)]
    logging.info('%d ps and %d workers (the first is the chief) on %s: python -m '
                 'graph_mnist.train %s', FLAGS.ps, FLAGS.workers, FLAGS.host,
                 ' '.join(train_args))
    code = run(tasks)
    logging.info('the chief ended with exit code %s; every task has stopped', code)
    return code


if __name__ == '__main__':
    cli.run(main, define_flags, positional='')
