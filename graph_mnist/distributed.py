r"""Training on a cluster with TensorFlow's own distributed runtime, as Cloud ML Engine ran
the talk's code: parameter servers hold the variables, workers train, `TF_CONFIG` says
who is who.

    TF_CONFIG='{"cluster": {"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222"],
                            "ps": ["10.0.0.3:2222"]},
                "task": {"type": "worker", "index": 0}}' \
        python -m graph_mnist.train --model=conv_dropout --workdir=runs/cluster

The same command and flags on every machine; `graph_mnist.cluster` starts such a cluster
on one machine. What each task does:

    ps      a tf.distribute.Server holding variables, until the chief says the run is over
    chief   builds the graph (variables on the ps, operations here: between-graph
            replication), initialises or restores the variables, trains, and alone
            evaluates, writes history.json, checkpoints, TensorBoard and the dashboard;
            its steps are the global step, which every worker's steps add to
    worker  builds the same graph, waits until the chief has initialised the variables,
            trains until the global step reaches --iterations

Asynchronous updates (TensorFlow 1's default): each worker applies its gradients as they
come. --sync_replicas: SyncReplicasOptimizer adds one gradient of every worker per step.
Each worker reads the whole training set in its own order (the chief the order of the
same seed on one machine, worker i the seed + 1000 (i + 1)).

Nothing waits forever: every Session call and every wait for another task times out
after --cluster_timeout seconds with a message saying who did not answer.

The training loop is graph_mnist.training's, the same as on one machine: a `Cluster`
is the place it trains in, and says what differs here (where the variables live, how
the Session starts, a global step that jumps, the chief alone keeping the books).
"""

import json
import os
import re
import signal
import threading
import time
from typing import NamedTuple

from absl import logging
import tensorflow as tf

from graph_mnist import data
from graph_mnist import exposure
from graph_mnist import training_graph
from graph_mnist.bookkeeping import SessionNet
from graph_mnist.errors import UserError

v1 = tf.compat.v1

JOBS = ('chief', 'worker', 'ps')
PS_GRACE_SECONDS = 3  # after the chief's "done", for the workers to see the last step


class ClusterError(UserError):
    """A bad TF_CONFIG, or a task that does not answer; the message says which."""


class Task(NamedTuple):
    """This process's place in the cluster, from TF_CONFIG."""
    cluster: dict   # job: ['host:port', ...]
    type: str       # chief, worker or ps
    index: int

    @property
    def is_chief(self):
        return self.type == 'chief'

    @property
    def replicas(self):
        """The training tasks: the chief and the workers."""
        return len(self.cluster.get('chief', [])) + len(self.cluster.get('worker', []))

    @property
    def replica(self):
        """0 for the chief, 1, 2, ... for the workers: seeds each one's data order."""
        return 0 if self.is_chief else self.index + len(self.cluster.get('chief', []))

    @property
    def name(self):
        return 'chief' if self.is_chief else f'{self.type} {self.index}'

    @property
    def address(self):
        return self.cluster[self.type][self.index]

    def spec(self):
        return tf.train.ClusterSpec(self.cluster)


def task_from_environment(environ=None):
    """The Task TF_CONFIG describes, None when it is not set, ClusterError when it is
    wrong (one message saying what is wrong)."""
    text = (os.environ if environ is None else environ).get('TF_CONFIG', '').strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ClusterError(f'TF_CONFIG is not JSON ({e})') from None
    if not isinstance(config, dict) or not isinstance(config.get('cluster'), dict) \
            or not isinstance(config.get('task'), dict):
        raise ClusterError('TF_CONFIG must be {"cluster": {"chief": [...], "worker": [...], '
                           '"ps": [...]}, "task": {"type": ..., "index": ...}}')
    cluster = config['cluster']
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise ClusterError(f'TF_CONFIG: jobs {unknown} are not ours; the jobs are {list(JOBS)}')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and a.rpartition(':')[2].isdigit() for a in addresses):
            raise ClusterError(f'TF_CONFIG: "{job}" must be a list of "host:port" addresses')
    if not cluster.get('ps'):
        raise ClusterError('TF_CONFIG: the cluster needs at least one "ps" (parameter server)')
    if len(cluster.get('chief', [])) > 1:
        raise ClusterError('TF_CONFIG: one "chief" at most')
    if not cluster.get('chief'):
        raise ClusterError('TF_CONFIG: the cluster needs a "chief" (it evaluates, writes the '
                           'history and the checkpoints)')
    kind, index = config['task'].get('type'), config['task'].get('index', 0)
    if kind not in cluster:
        raise ClusterError(f'TF_CONFIG: task type {kind!r} is not a job of the cluster '
                           f'{sorted(cluster)}')
    if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ClusterError(f'TF_CONFIG: task index {index!r} is out of range for "{kind}" '
                           f'({len(cluster[kind])} tasks)')
    return Task(cluster, kind, index)


def end_with_launcher(environ=None):
    """A task started by graph_mnist.cluster stops (SIGTERM to itself, which it handles
    as Ctrl-C) when the launcher is gone, however it went."""
    launcher = (os.environ if environ is None else environ).get('GRAPH_MNIST_LAUNCHER')
    if not launcher or not launcher.isdigit():
        return

    def watch():
        while os.getppid() == int(launcher):
            time.sleep(0.5)
        logging.warning('the launcher is gone: stopping')
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name='launcher-watch', daemon=True).start()


def start_server(task):
    """This task's tf.distribute.Server, or one clear error (a busy port, say). Outside
    graph_mnist.cluster's private network, one warning: TensorFlow's server listens on
    every interface, whatever TF_CONFIG names, and runs what it is sent."""
    try:
        server = tf.distribute.Server(task.spec(), job_name=task.type,
                                      task_index=task.index, start=True)
    except (tf.errors.OpError, ValueError) as e:
        raise ClusterError(f'{task.name} cannot serve on {task.address}: '
                           f'{str(e).strip().splitlines()[0]}') from None
    if not exposure.in_private_network():
        port = task.address.rpartition(':')[2]
        logging.warning('%s: TensorFlow\'s server listens on port %s of every interface, '
                        'unauthenticated: anyone who can reach it can run operations on '
                        'this machine (read and write its files among them). Keep the '
                        'cluster on a private network (README: "Train on a cluster")',
                        task.name, port)
    return server


# ----------------------------------------------------------------------- parameter server

def serve_parameters(task, stop_requested):
    """A parameter server: holds variables until the chief says the run is over (its
    one-slot queue gets a token), or until stopped."""
    server = start_server(task)
    logging.info('%s: holding variables on %s', task.name, task.address)
    graph = tf.Graph()
    with graph.as_default():
        done = done_queue(task.index).dequeue()
    config = v1.ConfigProto(device_filters=[f'/job:ps/task:{task.index}'],
                            operation_timeout_in_ms=5000)
    with v1.Session(server.target, graph=graph, config=config) as sess:
        while not stop_requested():
            try:
                sess.run(done, options=v1.RunOptions(timeout_in_ms=1000))
            except tf.errors.DeadlineExceededError:
                continue
            logging.info('%s: the chief says the run is over', task.name)
            time.sleep(PS_GRACE_SECONDS)
            return 0
    return 130


# ------------------------------------------------------------------ the graph's placement


class Placement:
    """Where a cluster task's graph goes (training_graph.build asks it): variables on the
    parameter servers, operations on this task (`device`, a replica_device_setter);
    a global step that every training task adds to; with `sync`, the optimizer wrapped
    so that each step aggregates one gradient of each of the `replicas`."""

    def __init__(self, device, replicas=1, sync=False, ps=1):
        self.device, self.replicas, self.sync, self.ps = device, replicas, sync, ps

    def global_step(self):
        return v1.train.get_or_create_global_step()

    def optimizer(self, optimizer):
        if not self.sync:
            return optimizer
        return v1.train.SyncReplicasOptimizer(optimizer, replicas_to_aggregate=self.replicas,
                                              total_num_replicas=self.replicas)

    def operations(self, optimizer, train_step, global_step):
        """What a cluster's sessions run besides the training (made before the graph is
        finalized): readiness, the synchronous optimizer's set-up, the end of the run,
        the global step after a training step."""
        ready = v1.report_uninitialized_variables()
        getattr(ready, 'mark_used', lambda: None)()  # run by SessionManager, maybe never
        ops = {'ready': ready, 'sync': self.sync,
               'done': [done_queue(ps).enqueue(1) for ps in range(self.ps)]}
        if self.sync:
            ops.update(ready_for_local_init=optimizer.ready_for_local_init_op,
                       chief_init=optimizer.chief_init_op,
                       local_init=optimizer.local_step_init_op,
                       init_tokens=optimizer.get_init_tokens_op(),
                       queue_runner=optimizer.get_chief_queue_runner())
        with tf.control_dependencies([train_step]):
            ops['step_after'] = tf.identity(global_step.read_value())
        return ops


def done_queue(ps):
    """A one-slot queue on parameter server `ps` where the chief says the run is over,
    shared by name between the chief's graph and the parameter server's own."""
    with tf.device(f'/job:ps/task:{ps}'):
        return v1.FIFOQueue(1, tf.int32, shared_name=f'graph_mnist_done_{ps}',
                            name=f'done_{ps}')


# ----------------------------------------------------------------------- chief and workers


def from_environment(sync=False, timeout=120, environ=None):
    """The Cluster task TF_CONFIG describes (started by graph_mnist.cluster: stopping
    when the launcher goes), or None when TF_CONFIG is not set."""
    task = task_from_environment(environ)
    if not task:
        return None
    end_with_launcher(environ)
    return Cluster(task, sync, timeout)


class Cluster:
    """One task of a cluster as a place graph_mnist.training trains in (the questions
    training.OneMachine answers for a run alone). The cluster's settings in one object:
    the task, synchronous replicas or not, the longest wait for another task."""

    def __init__(self, task, sync=False, timeout=120):
        self.task, self.sync, self.timeout = task, sync, timeout
        self.holds_variables = task.type == 'ps'
        self.keeps_books = task.is_chief

    def serve(self, stop_requested):
        return serve_parameters(self.task, stop_requested)

    def net(self, sess, g):
        """What the books read the network through (the chief's)."""
        return SessionNet(sess, g)

    def build(self, config):
        if config.style != 'graph':
            raise ClusterError(f'--style={config.style} is for one machine: the cluster '
                               'runs the talk\'s graph, its variables on the parameter '
                               'servers; leave --style=graph')
        if config.steps_per_run > 1:
            raise ClusterError('--steps_per_run is for one machine: on a cluster each step '
                               'goes through the parameter servers and adds to the global '
                               'step, one Session.run each; leave it at 1')
        task = self.task
        device = v1.train.replica_device_setter(
            worker_device=f'/job:{task.type}/task:{task.index}', cluster=task.spec())
        placement = Placement(device, replicas=task.replicas, sync=self.sync,
                              ps=len(task.cluster['ps']))
        return training_graph.build(config.model, loss=config.loss, seed=config.seed,
                            placement=placement, changes=config.changes)

    def batches(self, mnist, config):
        """Each task reads the whole training set in an order of its own."""
        return data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                            config.seed + 1000 * self.task.replica)

    def open(self, g, start):
        """The chief: a Session with the variables initialised or restored by
        `start(sess)`, and with synchronous replicas the tokens and the thread that
        applies the aggregated gradients. A worker: a Session once the chief has done
        that. The other tasks may still be starting: their ports refuse until then."""
        task, timeout = self.task, self.timeout
        server = start_server(task)
        config = session_config(g, task, timeout)
        ops = g.cluster
        manager = v1.train.SessionManager(
            ready_op=ops['ready'], ready_for_local_init_op=ops.get('ready_for_local_init'),
            local_init_op=ops.get('chief_init' if task.is_chief else 'local_init'),
            graph=g.graph, recovery_wait_secs=1)
        deadline, waiting = time.monotonic() + timeout, False
        while True:
            try:
                return self._session(manager, server, config, g, start)
            except tf.errors.UnavailableError as e:
                if time.monotonic() > deadline:
                    raise unanswered(task, e, timeout) from None
                if not waiting:
                    logging.info('%s: waiting for the other tasks to start', task.name)
                    waiting = True
                time.sleep(1)

    def _session(self, manager, server, config, g, start):
        task, ops = self.task, g.cluster
        try:
            if not task.is_chief:
                sess = manager.wait_for_session(server.target, config=config,
                                                max_wait_secs=self.timeout)
                if sess is None:
                    raise ClusterError(f'{task.name}: the chief did not initialise the '
                                       f'variables within {self.timeout:.0f} s '
                                       '(--cluster_timeout)')
                return sess
            sess = manager.prepare_session(server.target, init_fn=start, config=config)
            if ops['sync']:  # the tokens that let each worker's step go through, and the
                sess.run(ops['init_tokens'])  # thread that applies the aggregated gradients
                ops['queue_runner'].create_threads(sess, coord=tf.train.Coordinator(),
                                                   daemon=True, start=True)
            return sess
        except (tf.errors.DeadlineExceededError, tf.errors.AbortedError) as e:
            raise unanswered(task, e, self.timeout) from None

    def first_step(self, sess, g, started):
        return int(sess.run(g.global_step))

    def batch_index(self, step, local_steps):
        return local_steps

    def train_step(self, sess, g, batch_X, batch_Y, step):
        """(the batch's cross-entropy, the global step after it: every task adds)."""
        xent, after = sess.run([g.cross_entropy, g.cluster['step_after']],
                               {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep,
                                g.step: step})
        return xent, int(after)

    def nan(self, step):
        return ClusterError(f'{self.task.name}: the cross-entropy became NaN at step {step}')

    def progress(self, local_steps, step):
        if not self.keeps_books and local_steps % 1000 == 0:
            logging.info('%s: %d steps, global step %d', self.task.name, local_steps, step)

    def ran(self, local_steps, seconds, first, step):
        logging.info('%s: %d steps of its own in %.1f s (%.1f steps/s); global step %d '
                     'from %d', self.task.name, local_steps, seconds,
                     local_steps / max(seconds, 1e-9), step, first)

    def final_step(self, sess, g, step, iterations):
        if g.cluster['sync']:  # let workers waiting for a token see the end
            sess.run(g.cluster['init_tokens'])
        return max(step, iterations)

    def finished(self, sess, g, history, local_steps, seconds):
        history.setdefault('cluster', {}).update(
            {'replicas': self.task.replicas, 'ps': len(self.task.cluster['ps']),
             'sync_replicas': bool(g.cluster['sync']), 'chief_steps': local_steps,
             'chief_steps_per_second': local_steps / max(seconds, 1e-9)})
        sess.run(g.cluster['done'])  # the parameter servers may go

    def failure(self, error):
        """The ClusterError for a TensorFlow error that comes from the cluster."""
        task = self.task
        if isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                              tf.errors.AbortedError)):
            return unanswered(task, error, self.timeout)
        if isinstance(error, tf.errors.OutOfRangeError):  # the synchronous queue closed
            said = re.findall(r'grpc_message:"([^"]+)"', str(error))
            return ClusterError(f'{task.name}: synchronous training stopped (the chief\'s '
                                f'queue of gradients closed: '
                                f'{said[0] if said else "the chief failed"}). Resume from '
                                'the last checkpoint with --resume.')
        return None

    def close(self, sess):
        close_within(sess, 5)


def session_config(g, task, timeout):
    config = v1.ConfigProto()
    config.CopyFrom(g.config)
    config.device_filters[:] = ['/job:ps', f'/job:{task.type}/task:{task.index}']
    config.operation_timeout_in_ms = int(timeout * 1000)
    return config


def unanswered(task, error, timeout):
    """The ClusterError for an operation that failed for want of another task."""
    ps = ', '.join(task.cluster['ps'])
    if isinstance(error, tf.errors.DeadlineExceededError):
        what = f'waited {timeout:.0f} s (--cluster_timeout) for the other tasks'
    else:
        said = re.findall(r'grpc_message:"([^"]+)"', str(error))
        reason = said[0] if said else type(error).__name__
        what = f'lost the parameter servers ({ps}): {reason}'
    return ClusterError(f'{task.name} {what}. The run can go on from its last checkpoint: '
                        f'start the cluster again and the chief with --resume.')


def close_within(sess, seconds):
    """Closes the Session, waiting at most `seconds`: closing asks every task to clean
    up, and a dead parameter server never answers (the chief hung there, measured)."""
    closing = threading.Thread(target=sess.close, name='session-close', daemon=True)
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        logging.warning('the session did not close within %d s (a task is gone); leaving it',
                        seconds)
