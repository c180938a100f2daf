r"""Starts a training cluster on this machine: parameter servers and workers on loopback.

    graph-mnist-cluster --ps=1 --workers=2 -- --model=conv_dropout --workdir=runs/cluster
    graph-mnist-cluster --workers=2 -- --model=conv_dropout --sync_replicas

Everything after `--` is given to every task's `python -m graph_mnist.train`. The
launcher picks free ports on 127.0.0.1, writes each task's TF_CONFIG (the first of the
--workers is the chief), starts the processes, shows their logs line by line with the
task's name in front, and exits with the chief's exit code once the chief has ended and
the others have followed. Ctrl-C asks the chief to save a checkpoint and stop
(`--resume` goes on from there) and stops every other task, and so does SIGTERM; a task
whose launcher is gone (even by SIGKILL) stops by itself: nothing is left running.

Safe by default: TensorFlow's gRPC servers listen on every interface, whatever
address TF_CONFIG names, and run whatever graph they are sent, unauthenticated. So the
launcher runs the whole cluster in a network namespace of its own whose only interface
is loopback (Linux: unshare and ip, as an unprivileged user through a user namespace):
nothing outside this machine's processes can reach the tasks. Where that cannot be made
(not Linux, the tools missing, user namespaces disabled), it refuses with one line;
--expose_on_network runs the tasks in the machine's network instead, on every interface,
for a user who accepts that (on a private network only).

On several machines, run the same `python -m graph_mnist.train` on each with its own
TF_CONFIG (README: "Train on a cluster").

`graph-mnist-cluster` is `python -m graph_mnist.cluster`: the same program.
"""

import os
import shutil
import subprocess
import sys

from graph_mnist import exposure

EXPOSE = '--expose_on_network'
# the private network: a new network namespace (as root of a user namespace of its own,
# so no privilege is needed) with loopback up, then the command
UNSHARE = ['unshare', '--net', '--map-root-user', '--',
           'sh', '-c', 'ip link set lo up && exec "$0" "$@"']


class NoPrivateNetwork(Exception):
    """A private network cannot be made here; the message says why."""


def why_no_private_network():
    """None when a private network can be made here, else the reason (tried for real:
    user namespaces may be disabled, or forbidden inside a container)."""
    if not sys.platform.startswith('linux'):
        return f'network namespaces are Linux\'s, and this is {sys.platform}'
    missing = [tool for tool in ('unshare', 'ip') if shutil.which(tool) is None]
    if missing:
        return f'{" and ".join(missing)} not found (Debian: apt-get install util-linux iproute2)'
    try:
        tried = subprocess.run([*UNSHARE, 'true'], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f'unshare failed: {e}'
    if tried.returncode != 0:
        said = (tried.stderr.strip().splitlines() or [f'exit {tried.returncode}'])[-1]
        return f'unshare --net --map-root-user failed: {said}'
    return None


def in_private_network(argv, exposed_flag=EXPOSE):
    """Runs `argv` again (os.exec: the same process, its signals and exit code) in a
    network namespace of its own whose only interface is loopback, up; the processes it
    starts share it. TensorFlow's gRPC servers listen on every interface (0.0.0.0 is
    hard-coded in TensorFlow), whatever host TF_CONFIG names: so that a cluster on one
    machine cannot be reached from outside, it runs here. Where that cannot be made, one
    line saying what would be exposed and which flag accepts it, and exit 1."""
    if exposure.in_private_network():
        return
    reason = why_no_private_network()
    if reason:
        sys.exit(f'E cannot run the cluster in a private network: {reason}. Without one, '
                 'TensorFlow\'s servers of every task listen on all interfaces, '
                 'unauthenticated, and run any graph they are sent (files on this machine '
                 f'included); pass {exposed_flag} to accept that, on a network you trust')
    os.environ[exposure.PRIVATE_NETWORK] = '1'
    os.execvp(UNSHARE[0], [*UNSHARE, *argv])


def own_flags(argv):
    """The launcher's own flags: those before --."""
    return argv[:argv.index('--')] if '--' in argv else argv


def wants_private_network(argv):
    """The default; not with --expose_on_network, nor to print the help."""
    own = own_flags(argv)
    asks_help = any(a.split('=')[0] in ('--help', '--helpshort', '--helpfull', '-h', '-?')
                    for a in own)
    return not asks_help and not any(a in (EXPOSE, EXPOSE + '=true', EXPOSE + '=1')
                                     for a in own)


if __name__ == '__main__':
    if wants_private_network(sys.argv[1:]):  # before anything else holds a descriptor
        in_private_network([sys.executable, '-m', 'graph_mnist.cluster', *sys.argv[1:]])
    from graph_mnist import cli
    cli.before_tensorflow()

import json
import signal
import socket
import threading
import time

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
CHIEF_GRACE_SECONDS = 15  # for the others to end by themselves once the chief has
EVALUATOR_GRACE_SECONDS = 120  # more, for an evaluator's last evaluation
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


def plan(ps, workers, host='127.0.0.1', evaluators=0, chief_job='chief'):
    """[(task name, TF_CONFIG)] of a cluster: a chief, workers - 1 workers, ps servers,
    and an evaluator if asked (outside the training cluster, as TensorFlow defines it:
    its TF_CONFIG names the cluster, without itself)."""
    ports = iter(free_ports(ps + workers, host))
    cluster = {chief_job: [f'{host}:{next(ports)}'],
               'worker': [f'{host}:{next(ports)}' for _ in range(workers - 1)],
               'ps': [f'{host}:{next(ports)}' for _ in range(ps)]}
    if not cluster['worker']:
        del cluster['worker']
    tasks = [('ps', i) for i in range(ps)] + [(chief_job, 0)] + \
        [('worker', i) for i in range(workers - 1)] + [('evaluator', i)
                                                       for i in range(evaluators)]
    return [(('chief' if kind == chief_job else f'{kind} {index}'),
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
        for task in tasks:  # an evaluator has the final checkpoint still to read
            grace = EVALUATOR_GRACE_SECONDS if (task.name.startswith('evaluator') and not
                                                interrupted.is_set() and
                                                chief.process.returncode == 0) else 0
            if task is not chief:
                task.wait(max(0.1, deadline + grace - time.monotonic()))
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
    flags.DEFINE_integer('evaluators', 0, 'An evaluator task (0 or 1): it evaluates each '
                         'new checkpoint of the chief on the test images, beside the '
                         'training (pass --nochief_evaluates after -- to spare the chief).',
                         lower_bound=0, upper_bound=1)
    flags.DEFINE_enum('chief_job', 'chief', ['chief', 'master'], 'The chief\'s job name in '
                      'TF_CONFIG: master is Cloud ML Engine\'s (the talk\'s platform).')
    flags.DEFINE_string('host', '127.0.0.1', 'The address the tasks name in TF_CONFIG.')
    flags.DEFINE_bool('expose_on_network', False, 'Run the tasks in this machine\'s network '
                      'rather than in a private network namespace with loopback only (the '
                      'default): TensorFlow\'s gRPC servers then listen on every interface, '
                      'unauthenticated, whatever --host says. Only on a network you trust.')


def main(argv):
    train_args = argv[1:]
    if any(a.split('=')[0] in ('--helpfull', '--help') for a in train_args):
        raise app.UsageError('the flags after -- are graph_mnist.train\'s: python -m '
                             'graph_mnist.train --helpfull')
    tasks = [Task(name, tf_config, train_args) for name, tf_config in
             plan(FLAGS.ps, FLAGS.workers, FLAGS.host, FLAGS.evaluators, FLAGS.chief_job)]
    if FLAGS.expose_on_network:
        logging.warning('--expose_on_network: the tasks\' TensorFlow servers listen on every '
                        'interface of this machine, unauthenticated; anyone who can reach '
                        'them can run operations here while the cluster runs')
    else:
        logging.info('in a private network: loopback only, unreachable from outside')
    logging.info('%d ps and %d workers (the first is the chief)%s on %s: python -m '
                 'graph_mnist.train %s', FLAGS.ps, FLAGS.workers,
                 ' and an evaluator' if FLAGS.evaluators else '', FLAGS.host,
                 ' '.join(train_args))
    code = run(tasks)
    logging.info('the chief ended with exit code %s; every task has stopped', code)
    return code


if __name__ == '__main__':
    cli.run(main, define_flags, positional='')
