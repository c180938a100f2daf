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
"""

import json
import os
import re
import signal
import threading
import time
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf

from graph_mnist import data
from graph_mnist import models
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
    """This task's tf.distribute.Server, or one clear error (a busy port, say)."""
    try:
        return tf.distribute.Server(task.spec(), job_name=task.type, task_index=task.index,
                                    start=True)
    except (tf.errors.OpError, ValueError) as e:
        raise ClusterError(f'{task.name} cannot serve on {task.address}: '
                           f'{str(e).strip().splitlines()[0]}') from None


# ----------------------------------------------------------------------- parameter server

def serve_parameters(task, stop_requested):
    """A parameter server: holds variables until the chief says the run is over (its
    one-slot queue gets a token), or until stopped."""
    server = start_server(task)
    logging.info('%s: holding variables on %s', task.name, task.address)
    graph = tf.Graph()
    with graph.as_default():
        done = models.done_queue(task.index).dequeue()
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


# ----------------------------------------------------------------------- chief and workers

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


def train(mnist, config, workdir, task, resume, stop_requested, sync, timeout, train_module):
    """Trains as `task` (chief or worker) until the global step reaches config.iterations.
    The chief returns the history; a worker returns None.

    train_module: the running graph_mnist.train module, whose Bookkeeping, _start and
    Interrupted the chief uses. It is passed, not imported: under `python -m
    graph_mnist.train` that module is __main__, and an import would load a second copy
    whose Interrupted the entry point would not catch."""
    device = v1.train.replica_device_setter(
        worker_device=f'/job:{task.type}/task:{task.index}', cluster=task.spec())
    placement = models.Placement(device, replicas=task.replicas, sync=sync,
                                 ps=len(task.cluster['ps']))
    g = models.build(config.model, loss=config.loss, seed=config.seed, placement=placement)
    batches = data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                           config.seed + 1000 * task.replica)
    server = start_server(task)
    sconfig = session_config(g, task, timeout)
    ops = g.cluster
    manager = v1.train.SessionManager(
        ready_op=ops['ready'], ready_for_local_init_op=ops.get('ready_for_local_init'),
        local_init_op=ops.get('chief_init' if task.is_chief else 'local_init'),
        graph=g.graph, recovery_wait_secs=1)
    started = {}
    deadline = time.monotonic() + timeout
    while True:  # the other tasks may still be starting: their ports refuse until then
        try:
            sess = _session(manager, server, sconfig, g, task, config, workdir, resume, sync,
                            started, train_module, timeout)
            break
        except tf.errors.UnavailableError as e:
            if time.monotonic() > deadline:
                raise unanswered(task, e, timeout) from None
            if not started.get('waiting'):
                logging.info('%s: waiting for the other tasks to start', task.name)
                started['waiting'] = True
            time.sleep(1)
    try:
        return _loop(sess, g, mnist, batches, config, workdir, task, started, stop_requested,
                     train_module, timeout)
    finally:
        close_within(sess, 5)


def close_within(sess, seconds):
    """Closes the Session, waiting at most `seconds`: closing asks every task to clean
    up, and a dead parameter server never answers (the chief hung there, measured)."""
    closing = threading.Thread(target=sess.close, name='session-close', daemon=True)
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        logging.warning('the session did not close within %d s (a task is gone); leaving it',
                        seconds)


def _session(manager, server, sconfig, g, task, config, workdir, resume, sync, started,
             train_module, timeout):
    """The chief: a Session with the variables initialised (or restored), and with
    --sync_replicas the tokens and the thread that applies the aggregated gradients.
    A worker: a Session once the chief has done that."""
    ops = g.cluster
    try:
        if task.is_chief:
            def initialise(sess):  # fresh variables, or the checkpoint's with --resume
                started['first_step'], started['history'] = train_module._start(
                    sess, g, config, workdir, resume)
            sess = manager.prepare_session(server.target, init_fn=initialise, config=sconfig)
            if sync:  # the tokens that let each worker's step go through, and the
                sess.run(ops['init_tokens'])  # thread that applies the aggregated gradients
                coordinator = tf.train.Coordinator()
                ops['queue_runner'].create_threads(sess, coord=coordinator, daemon=True,
                                                   start=True)
        else:
            sess = manager.wait_for_session(server.target, config=sconfig,
                                            max_wait_secs=timeout)
            if sess is None:
                raise ClusterError(f'{task.name}: the chief did not initialise the variables '
                                   f'within {timeout:.0f} s (--cluster_timeout)')
    except (tf.errors.DeadlineExceededError, tf.errors.AbortedError) as e:
        raise unanswered(task, e, timeout) from None
    return sess


def _loop(sess, g, mnist, batches, config, workdir, task, started, stop_requested,
          train_module, timeout):
    book = None
    if task.is_chief:
        book = train_module.Bookkeeping(sess, g, mnist, batches, config, workdir,
                                        started['history'], started['first_step'])
    local_steps, began = 0, time.perf_counter()
    last = {'log': None, 'eval': None, 'checkpoint': None}

    def due(kind, every, step):
        """Whether the global step has reached a new multiple of `every` (with several
        workers it jumps: the chief acts at the first step it sees past the multiple)."""
        mark = step // every
        if last[kind] is not None and mark <= last[kind]:
            return False
        last[kind] = mark
        return True

    try:
        step = int(sess.run(g.global_step))
        first_global = step
        if book:  # the marks of the start: a resumed run checkpoints at its next multiple
            last['checkpoint'] = step // config.checkpoint_every
        while step < config.iterations:
            if stop_requested():
                if book:
                    raise train_module.Interrupted(step, book.stop(step))
                break
            batch_X, batch_Y = batches(local_steps)
            if book:
                if due('checkpoint', config.checkpoint_every, step):
                    book.checkpoint(step)
                if due('log', config.log_every, step):
                    book.training_batch(step, batch_X, batch_Y)
                if due('eval', config.eval_every, step):
                    book.evaluate(step)
            xent, step = sess.run(
                [g.cross_entropy, g.cluster['step_after']],
                {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep, g.step: step})
            step, local_steps = int(step), local_steps + 1
            if np.isnan(xent):
                if book:
                    book.stop_if_nan(xent, step, 'in the training step')
                raise ClusterError(f'{task.name}: the cross-entropy became NaN at step {step}')
            if not book and local_steps % 1000 == 0:
                logging.info('%s: %d steps, global step %d', task.name, local_steps, step)
        seconds = time.perf_counter() - began
        logging.info('%s: %d steps of its own in %.1f s (%.1f steps/s); global step %d '
                     'from %d', task.name, local_steps, seconds, local_steps / seconds, step,
                     first_global)
        if not book:
            return None
        if g.sync is not None:  # let workers waiting for a token see the end
            sess.run(g.cluster['init_tokens'])
        final = max(step, config.iterations)
        book.evaluate(final, final=True)
        book.checkpoint(final, final=True)
        book.history.setdefault('cluster', {}).update(
            {'replicas': task.replicas, 'ps': len(task.cluster['ps']),
             'sync_replicas': g.sync is not None, 'chief_steps': local_steps,
             'chief_steps_per_second': local_steps / seconds})
        sess.run(g.cluster['done'])  # the parameter servers may go
        return book.finish()
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError) as e:
        if book:
            book.save('interrupted')
        raise unanswered(task, e, timeout) from None
    except tf.errors.OutOfRangeError as e:  # the synchronous optimizer's queue closed
        if book:
            book.save('interrupted')
        said = re.findall(r'grpc_message:"([^"]+)"', str(e))
        raise ClusterError(f'{task.name}: synchronous training stopped (the chief\'s queue '
                           f'of gradients closed: {said[0] if said else "the chief failed"})'
                           f'. Resume from the last checkpoint with --resume.') from None
    finally:
        if book:
            book.close_events()
