"""A cluster task's session, TensorFlow 1's way: a MonitoredSession made as
MonitoredTrainingSession makes it (the chief's SessionCreator initialises or restores the
variables, a worker's waits for them) with SessionRunHooks, and how a task says what
went wrong when another task does not answer (ClusterError). graph_mnist.distributed
uses it for the chief and the workers."""

import re
import threading
import time

from absl import logging
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist.errors import UserError

v1 = tf.compat.v1


class ClusterError(UserError):
    """A bad TF_CONFIG, or a task that does not answer; the message says which."""


class OwnSteps(v1.train.SessionRunHook):
    """This task's own training steps (the global step counts every task's), counted
    after each run of the monitored session, a worker's logged every 1000; and the
    plain Session underneath, where the chief's books evaluate and save."""

    def __init__(self, task):
        self.task, self.steps, self.session, self.began = task, 0, None, None

    def after_create_session(self, session, coord):
        self.session, self.began = session, time.perf_counter()

    def after_run(self, run_context, run_values):
        self.steps += 1
        if not self.task.is_chief and self.steps % 1000 == 0:
            logging.info('%s: %d steps', self.task.name, self.steps)

    def log(self, first, step):
        seconds = time.perf_counter() - self.began
        logging.info('%s: %d steps of its own in %.1f s (%.1f steps/s); global step %d '
                     'from %d', self.task.name, self.steps, seconds,
                     self.steps / max(seconds, 1e-9), step, first)
        return seconds


class Waiting(v1.train.SessionCreator):
    """The chief's or a worker's SessionCreator, as MonitoredTrainingSession makes them,
    made patient and final: it waits up to --cluster_timeout for the other tasks to
    start (their ports refuse until then), and a second session is refused with
    ClusterError (see TaskSession)."""

    def __init__(self, creator, task, timeout):
        self.creator, self.task, self.timeout, self.created = creator, task, timeout, False

    def create_session(self):
        task, timeout = self.task, self.timeout
        if self.created:
            raise ClusterError(f'{task.name} lost its session to the parameter servers '
                               f'({", ".join(task.cluster["ps"])}). The run can go on from '
                               'its last checkpoint: start the cluster again and the chief '
                               'with --resume.')
        deadline, waiting = time.monotonic() + timeout, False
        while True:
            try:
                session = self.creator.create_session()
                self.created = True
                return session
            except tf.errors.UnavailableError as e:
                if time.monotonic() > deadline:
                    raise unanswered(task, e, timeout) from None
                if not waiting:
                    logging.info('%s: waiting for the other tasks to start', task.name)
                    waiting = True
                time.sleep(1)
            except tf.errors.DeadlineExceededError:
                raise ClusterError(f'{task.name}: the chief did not initialise the variables '
                                   f'within {timeout:.0f} s (--cluster_timeout)') from None


class WorkerSessionCreator(v1.train.SessionCreator):
    """TensorFlow 1's WorkerSessionCreator, looking every second whether the chief has
    initialised the variables (its SessionManager looks every 30 s: a worker that
    looked once too early missed a short run)."""

    def __init__(self, scaffold, master, config, max_wait_secs):
        self.scaffold, self.master, self.config = scaffold, master, config
        self.max_wait_secs = max_wait_secs

    def create_session(self):
        scaffold = self.scaffold
        scaffold.finalize()
        manager = v1.train.SessionManager(
            local_init_op=scaffold.local_init_op, ready_op=scaffold.ready_op,
            ready_for_local_init_op=scaffold.ready_for_local_init_op,
            graph=v1.get_default_graph(), recovery_wait_secs=1)
        return manager.wait_for_session(self.master, config=self.config,
                                        max_wait_secs=self.max_wait_secs)


class TaskSession(v1.train.MonitoredSession):
    """TensorFlow 1's session for a task of a cluster: what
    `MonitoredTrainingSession(master=server.target, is_chief=...)` makes (the chief's
    SessionCreator initialises or restores the variables, a worker's waits for them;
    SessionRunHooks), but not recovering. MonitoredTrainingSession always recovers: on a
    lost parameter server it closes its session (a close that never returns when that
    server is dead) and creates a new one, which without a checkpoint_dir initialises
    the weights again, or waits for the server forever. This project's checkpoints
    are its own (written with the history), so a lost server ends the task with one
    message and the run resumes with --resume, as SingularMonitoredSession, TF1's
    non-recovering one, would (it has no worker's creator)."""

    def __init__(self, session_creator, hooks):
        super(v1.train.MonitoredSession, self).__init__(
            session_creator, hooks, should_recover=False, stop_grace_period_secs=5)


def task_session(task, g, server, timeout, hooks, placement, restore=None):
    """The monitored session of a chief or a worker, inside g's graph. restore: the
    chief's checkpoint to start from (after the initialisation)."""
    config = session_config(g, task, timeout)
    restored = (lambda scaffold, sess: checkpoints.restore(sess, g.saver, restore)) \
        if restore else None
    scaffold = v1.train.Scaffold(init_op=g.init, saver=g.saver, init_fn=restored)
    if task.is_chief:
        creator = v1.train.ChiefSessionCreator(scaffold, master=server.target, config=config)
    else:
        creator = WorkerSessionCreator(scaffold, server.target, config, max_wait_secs=timeout)
    if placement.sync:
        hooks = hooks + [placement.sync_optimizer.make_session_run_hook(task.is_chief)]
    with g.graph.as_default():
        return TaskSession(Waiting(creator, task, timeout), hooks)


def failure_of(task, error, timeout):
    """The ClusterError for a TensorFlow error that comes from the cluster, or None."""
    if isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                          tf.errors.AbortedError)):
        return unanswered(task, error, timeout)
    if isinstance(error, tf.errors.OutOfRangeError):  # the synchronous queue closed
        said = re.findall(r'grpc_message:"([^"]+)"', str(error))
        return ClusterError(f'{task.name}: synchronous training stopped (the chief\'s '
                            f'queue of gradients closed: '
                            f'{said[0] if said else "the chief failed"}). Resume from '
                            'the last checkpoint with --resume.')
    return None


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
