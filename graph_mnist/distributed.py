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

Each task's session is TensorFlow 1's own: a MonitoredSession made as
MonitoredTrainingSession makes it (the chief's SessionCreator initialises or restores,
a worker's waits for it), with SessionRunHooks (StopAtStepHook on the workers, the
synchronous optimizer's hook, this project's count of a task's own steps); see
TaskSession for the one thing it does differently. The chief runs the talk's loop
(graph_mnist.training.loop) over it, keeping the books as on one machine; a worker runs
TensorFlow 1's `while not sess.should_stop()` loop.
"""

import functools
import json
import math
import os
import signal
import threading
import time
from typing import NamedTuple

from absl import logging
import tensorflow as tf

from graph_mnist import cli
from graph_mnist import data
from graph_mnist import exposure
from graph_mnist import training
from graph_mnist import training_graph
from graph_mnist.bookkeeping import Bookkeeping
from graph_mnist.bookkeeping import SessionNet
from graph_mnist.task_session import ClusterError
from graph_mnist.task_session import OwnSteps
from graph_mnist.task_session import close_within
from graph_mnist.task_session import failure_of
from graph_mnist.task_session import task_session

v1 = tf.compat.v1

JOBS = ('chief', 'worker', 'ps')
EVALUATOR = 'evaluator'  # outside the training cluster, as TensorFlow defines it
PS_GRACE_SECONDS = 3  # after the chief's "done", for the workers to see the last step


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


def task_from_environment():
    """The Task TF_CONFIG describes, None when it is not set, ClusterError when it is
    wrong (one message saying what is wrong). Read by TensorFlow's own
    TFConfigClusterResolver, as platforms write it: `master` (Cloud ML Engine's name)
    is the chief, an `evaluator` task is outside the training cluster (TensorFlow's
    definition; listed in the cluster or not), `environment` is ignored."""
    text = os.environ.get('TF_CONFIG', '').strip()
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
    unknown = sorted(set(config['cluster']) - set(JOBS) - {'master', EVALUATOR})
    if unknown:
        raise ClusterError(f'TF_CONFIG: jobs {unknown} are not ours; the jobs are '
                           f'{[*JOBS, EVALUATOR]} ("master" is the chief)')
    for job, addresses in config['cluster'].items():
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and a.rpartition(':')[2].isdigit() for a in addresses):
            raise ClusterError(f'TF_CONFIG: "{job}" must be a list of "host:port" addresses')
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    try:
        cluster = resolver.cluster_spec().as_dict()
        kind, index = resolver.task_type, resolver.task_id or 0
    except (ValueError, TypeError, KeyError) as e:
        raise ClusterError(f'TF_CONFIG: {e}') from None
    if 'master' in cluster:
        if 'chief' in cluster:
            raise ClusterError('TF_CONFIG: "master" and "chief" are one task by two names: '
                               'give one')
        cluster['chief'] = cluster.pop('master')
    kind = 'chief' if kind == 'master' else kind
    evaluators = cluster.pop(EVALUATOR, [])
    if not cluster.get('ps'):
        raise ClusterError('TF_CONFIG: the cluster needs at least one "ps" (parameter server)')
    if len(cluster.get('chief', [])) > 1:
        raise ClusterError('TF_CONFIG: one "chief" at most')
    if not cluster.get('chief'):
        raise ClusterError('TF_CONFIG: the cluster needs a "chief" (it writes the history '
                           'and the checkpoints)')
    if kind == EVALUATOR:
        if not isinstance(index, int) or not 0 <= index < max(1, len(evaluators)):
            raise ClusterError(f'TF_CONFIG: evaluator index {index!r} is out of range')
        return Task(cluster, kind, index)
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
    """Where a cluster task's graph goes (training_graph.build asks it): variables on
    the parameter servers, operations on this task (`device`, a replica_device_setter);
    with `sync`, the optimizer wrapped so that each step aggregates one gradient of each
    of the `replicas` (kept as `sync_optimizer`, for its session hook)."""

    def __init__(self, device, replicas=1, sync=False):
        self.device, self.replicas, self.sync = device, replicas, sync
        self.sync_optimizer = None

    def optimizer(self, optimizer):
        if self.sync:
            self.sync_optimizer = v1.train.SyncReplicasOptimizer(
                optimizer, replicas_to_aggregate=self.replicas,
                total_num_replicas=self.replicas)
            return self.sync_optimizer
        return optimizer


def done_queue(ps):
    """A one-slot queue on parameter server `ps` where the chief says the run is over,
    shared by name between the chief's graph and the parameter server's own."""
    with tf.device(f'/job:ps/task:{ps}'):
        return v1.FIFOQueue(1, tf.int32, shared_name=f'graph_mnist_done_{ps}',
                            name=f'done_{ps}')


def build(task, config, sync=False):
    """The graph of a training task (graph_mnist.training_graph's, placed), its
    Placement, and the chief's last operations: the end of the run for the parameter
    servers, and with --sync_replicas the tokens that let waiting workers see it.
    Left open: the session's Scaffold finalizes it."""
    if config.style != 'graph':
        raise ClusterError(f'--style={config.style} is for one machine: the cluster runs '
                           'the talk\'s graph, its variables on the parameter servers; '
                           'leave --style=graph')
    if config.steps_per_run > 1:
        raise ClusterError('--steps_per_run is for one machine: on a cluster each step goes '
                           'through the parameter servers and adds to the global step, one '
                           'Session.run each; leave it at 1')
    device = v1.train.replica_device_setter(
        worker_device=f'/job:{task.type}/task:{task.index}', cluster=task.spec())
    placement = Placement(device, replicas=task.replicas, sync=sync)
    g = training_graph.build(config.spec, loss=config.loss, seed=config.seed,
                             cluster=placement, precision=config.precision)
    with g.graph.as_default():
        last = [done_queue(ps).enqueue(1) for ps in range(len(task.cluster['ps']))]
        if sync:
            last.insert(0, placement.sync_optimizer.get_init_tokens_op())
    return g, placement, last


# ----------------------------------------------------------------------- chief and workers


def run(task, settings, workdir=None, data_dir=None, resume=False, given=(), sync=False,
        timeout=120, chief_evaluates=True):
    """What `python -m graph_mnist.train` does with TF_CONFIG set: this task's part (a
    parameter server's, the chief's, a worker's or the evaluator's); its exit code."""
    end_with_launcher()
    if task.type == 'ps':
        return serve_parameters(task, cli.stop_on_signals(saving=False))
    if task.is_chief:
        return training.train_and_evaluate(
            settings, workdir, data_dir, resume, given,
            trainer=functools.partial(chief, task, sync, timeout, chief_evaluates))
    stop_requested = cli.stop_on_signals(saving=False)
    if task.type == EVALUATOR and not workdir:
        raise ClusterError('the evaluator reads the chief\'s checkpoints: give it the '
                           'chief\'s --workdir')
    config = training.config_of(settings, workdir, resume, given)
    mnist = data.load(data_dir, log=logging.info)
    if task.type == EVALUATOR:
        from graph_mnist import evaluator
        evaluator.evaluate(config, workdir, mnist, stop_requested, timeout)
        return 0
    work(task, config, mnist, stop_requested, sync, timeout)
    return 0


def chief(task, sync, timeout, evaluates, mnist, config, workdir, resume, stop_requested):
    """The chief: the talk's loop (training.loop) over the task's monitored session,
    the books kept as on one machine; at the end the cluster's figures in the history,
    and the parameter servers told the run is over. Its steps are the global step."""
    server = start_server(task)
    g, placement, last = build(task, config, sync)
    path, history, _ = training.starting_point(config, workdir, resume)
    batches = data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                           config.seed)
    own = OwnSteps(task)
    sess = task_session(task, g, server, timeout, [own], placement, restore=path)
    books = None
    try:
        first = int(own.session.run(g.global_step))
        books = Bookkeeping(SessionNet(own.session, g), mnist, batches, config, workdir,
                            history, first, for_evaluator=True, evaluates=evaluates)
        with books:
            step = training.loop(sess, g, batches, books, config, first, stop_requested)
            seconds = own.log(first, step)
            own.session.run(last[:-len(task.cluster['ps'])])  # the waiting workers' tokens
            history.setdefault('cluster', {}).update(
                {'replicas': task.replicas, 'ps': len(task.cluster['ps']),
                 'sync_replicas': sync, 'chief_steps': own.steps,
                 'chief_steps_per_second': own.steps / max(seconds, 1e-9)})
            summary = books.finish(max(step, config.iterations))
            own.session.run(last[-len(task.cluster['ps']):])  # the parameter servers may go
            return summary
    except tf.errors.OpError as e:
        failure = failure_of(task, e, timeout)
        if failure is None:
            raise
        if books:
            books.save('interrupted')
        raise failure from None
    finally:
        close_within(sess, 5)


def work(task, config, mnist, stop_requested, sync, timeout):
    """A worker: TensorFlow 1's loop over its monitored session (`while not
    sess.should_stop()`), until the global step reaches --iterations (StopAtStepHook)
    or a stop is requested. Its batches are its own order of the training set."""
    server = start_server(task)
    g, placement, _ = build(task, config, sync)
    batches = data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                           config.seed + 1000 * task.replica)
    own = OwnSteps(task)
    hooks = [own, v1.train.StopAtStepHook(last_step=config.iterations)]
    sess = task_session(task, g, server, timeout, hooks, placement)
    try:
        step = first = int(own.session.run(g.global_step))
        while not sess.should_stop() and not stop_requested():
            batch_X, batch_Y = batches(step)
            _, xent, step = sess.run([g.train_step, g.cross_entropy, g.next_step],
                                     {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep,
                                      g.step: step})
            if math.isnan(xent):
                raise ClusterError(f'{task.name}: the cross-entropy became NaN at step {step}')
        own.log(first, step)
    except tf.errors.OpError as e:
        failure = failure_of(task, e, timeout)
        if failure is None:
            raise
        raise failure from None
    finally:
        close_within(sess, 5)
