r"""Trains one network of the talk with a tf.compat.v1 Session and a feed_dict loop.

    python -m graph_mnist.train --model=conv_dropout

The graph is built first (graph_mnist.models); then a Session runs its training step
once per batch of 100 images, feeding them through the placeholders X and Y_, as in
the talk. Every --log_every steps: accuracy and cross-entropy on the current batch;
every --eval_every steps: the same on all 10,000 test images. The metrics history is
written to <workdir>/history.json as it grows (graph_mnist.runs).

`train(mnist, Config(...), workdir)` is the whole run, for tests, notebooks and scripts;
`main` only turns the flags into a Config.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import dataclasses
import math
import signal
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import dashboard
from graph_mnist import data
from graph_mnist import distributed
from graph_mnist import events as graph_events
from graph_mnist import models
from graph_mnist import runs
from graph_mnist.errors import UserError

v1 = tf.compat.v1



class TrainingError(UserError):
    """A run that cannot go on (loss gone NaN, nothing to resume); the message says why."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings of one run: built from the flags in one place (`main`), stored field
    by field in its history.json, read back from there to resume it."""
    model: str = 'conv_dropout'
    iterations: int = None     # training steps; None: the talk's count for the model
    batch_size: int = 100
    seed: int = 0              # initial weights, dropout and the data order
    loss: str = 'stable'       # models.LOSSES
    eval_every: int = 100      # test evaluations (all 10,000 images)
    log_every: int = 20        # the training batch's accuracy and loss
    checkpoint_every: int = 1000
    vis: str = 'none'          # the dashboard: dashboard.MODES, or 'auto' (made concrete)

    # what a resumed run must keep; the other settings may change between sessions
    FIXED = ('model', 'seed', 'batch_size', 'loss')

    def __post_init__(self):
        if self.model not in models.NETWORKS:
            raise ValueError(f'model must be one of {list(models.NETWORKS)}, got {self.model!r}')
        if self.loss not in models.LOSSES or self.vis not in ('auto', *dashboard.MODES):
            raise ValueError(f'loss must be one of {models.LOSSES}, vis one of '
                             f'{("auto", *dashboard.MODES)}')
        object.__setattr__(self, 'vis', dashboard.choose(self.vis))
        if self.iterations is None:
            object.__setattr__(self, 'iterations', models.NETWORKS[self.model].iterations)

    @classmethod
    def of_run(cls, history, **changes):
        """The settings stored in a run's history, with `changes`."""
        stored = {f.name: history[f.name] for f in dataclasses.fields(cls) if f.name in history}
        return cls(**{**stored, **changes})


def new_history(config):
    spec = models.NETWORKS[config.model]
    return runs.new_history(dataclasses.asdict(config), pkeep=spec.pkeep,
                            talk_accuracy=spec.talk_accuracy, tensorflow=tf.__version__)


class Interrupted(Exception):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint."""

    def __init__(self, step, path):
        super().__init__(f'stopped at step {step}; checkpoint saved: {path}')
        self.step, self.path = step, path


# --------------------------------------------------------------------------- the loop


def open_session(g):
    """The Session a network's training runs in (also what scripts/benchmark.py times)."""
    return v1.Session(graph=g.graph, config=g.config)


def training_step(sess, g, batch_X, batch_Y, step):
    """The talk's training step: gradients on this batch, one small step down them.
    Returns the batch's cross-entropy (computed on the way, fetched to catch a NaN)."""
    _, xent = sess.run([g.train_step, g.cross_entropy],
                       {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep, g.step: step})
    return xent


def train(mnist, config=Config(), workdir=None, resume=False, stop_requested=None):
    """Trains `config.model` on `mnist` (a data.Mnist); returns the metrics history.

    With a workdir: the history is written there at every test evaluation, TensorBoard
    event files beside it, and a checkpoint every `config.checkpoint_every` steps and at
    the end. resume: continue the workdir's run from its latest checkpoint.
    stop_requested: a callable polled before every step; when it answers True, a
    checkpoint is saved and Interrupted raised. A loss gone NaN raises TrainingError
    after writing the history.
    """
    g = models.build(config.model, loss=config.loss, seed=config.seed)  # before any value
    batches = data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                           config.seed)
    sess = open_session(g)  # as in the talk: sess = tf.Session(); sess.run(init)
    try:  # until the loop's own try: a failed start closes the Session too
        first_step, history = _start(sess, g, config, workdir, resume)
        book = Bookkeeping(sess, g, mnist, batches, config, workdir, history, first_step)
    except BaseException:
        sess.close()
        raise
    try:
        for step in range(first_step, config.iterations):
            if stop_requested and stop_requested():
                raise Interrupted(step, book.stop(step))
            if step > first_step and step % config.checkpoint_every == 0:
                book.checkpoint(step)
            batch_X, batch_Y = batches(step)
            if step % config.log_every == 0:
                book.training_batch(step, batch_X, batch_Y)  # the talk's display line
            if step % config.eval_every == 0:
                book.evaluate(step)  # "it is just for display": the test set trains nothing

            xent = training_step(sess, g, batch_X, batch_Y, step)
            book.stop_if_nan(xent, step, 'in the training step')
        book.evaluate(config.iterations, final=True)
        book.checkpoint(config.iterations, final=True)
    except KeyboardInterrupt:  # no stop_requested handler (a plain call): no checkpoint
        book.save('interrupted')
        raise
    finally:
        sess.close()
        book.close_events()
    return book.finish()


def _start(sess, g, config, workdir, resume):
    """Restores the latest checkpoint (resume) or initialises the variables:
    (first step, history so far)."""
    if not resume:
        sess.run(g.init)
        return 0, new_history(config)
    found = checkpoints.latest(workdir)
    if not found:
        raise TrainingError(f'no checkpoint in {workdir}: nothing to resume')
    path, step, history = found
    checkpoints.restore(sess, g.saver, path)
    if step >= config.iterations:
        raise TrainingError(f'the run in {workdir} has already trained {step} steps; '
                            'pass a larger --iterations to train on')
    history.update(dataclasses.asdict(config))  # the settings of this session
    logging.info('resuming from %s at step %d', path, step)
    return step, history


# --------------------------------------------------------------------- the bookkeeping


class Bookkeeping:
    """Everything a run keeps beside its training steps: the history and its file, the
    clock, TensorBoard events, the dashboard, checkpoints, the NaN watch."""

    def __init__(self, sess, g, mnist, batches, config, workdir, history, first_step):
        self.sess, self.g, self.mnist, self.batches = sess, g, mnist, batches
        self.config, self.workdir, self.history = config, workdir, history
        self.test_feed = g.test_feed(mnist.test_images, mnist.test_labels)
        self.variables = g.weights + g.biases
        self.board = None
        if config.vis != 'none':
            self.board = dashboard.Dashboard(
                config.vis, workdir, f'{config.model}, seed {config.seed}',
                evaluations=(config.iterations - first_step) // config.eval_every + 2)
        self.events = graph_events.EventLog(workdir, g.graph) if workdir else None
        logging.info('%s: %s trainable parameters, %s, %d steps of %d images, pkeep %.2f, '
                     'loss %s', config.model, f'{models.trainable_parameters(g):,}',
                     g.spec.optimizer.__name__, config.iterations, config.batch_size,
                     g.spec.pkeep, config.loss)
        self.elapsed_before = history.get('elapsed', 0.0)
        self.start = time.perf_counter()
        history['loop_started_at'] = time.time()  # wall clock: scripts/benchmark.py's start-up

    def clock(self):
        """Seconds of training so far, earlier sessions of a resumed run included."""
        return self.elapsed_before + time.perf_counter() - self.start

    def save(self, status):
        self.history['status'] = status
        if self.workdir:
            runs.write_history(self.workdir, self.history)

    def checkpoint(self, step, final=False):
        if final:
            self.history['wall_time'] = self.clock()
        if not self.workdir:
            return None
        self.history['elapsed'] = self.clock()
        return checkpoints.save(self.sess, self.g.saver, self.workdir, step,
                                runs.history_before(self.history, step))

    def stop(self, step):
        """A checkpoint, then the history marked interrupted: the path of the checkpoint."""
        path = self.checkpoint(step)
        self.save('interrupted')
        return path

    def stop_if_nan(self, xent, step, where):
        if math.isnan(xent):
            self.history['nan_step'], self.history['nan_where'] = step, where
            self.save('nan')
            raise TrainingError(nan_message(step, where, self.config.loss, self.workdir))

    def training_batch(self, step, batch_X, batch_Y):
        """This batch's accuracy and loss, all neurons on (pkeep 1), logged and kept."""
        g = self.g
        acc, xent, lr, predicted = self.sess.run(
            [g.accuracy, g.cross_entropy, g.lr, g.prediction],
            {g.X: batch_X, g.Y_: batch_Y, g.pkeep: 1.0, g.step: step})
        train = self.history['train']
        runs.record(train, step=step, accuracy=float(acc), loss=float(xent), lr=float(lr),
                    time=self.clock())
        logging.info('%5d: accuracy: %.4f loss: %.4f (lr: %.6f)   %d/%d, ETA %s', step, acc,
                     xent, lr, step, self.config.iterations, _eta(train, self.config.iterations))
        if self.events:
            self.events.training(step, acc, xent, lr)
        if self.board:
            self.board.training_batch(batch_X, batch_Y.argmax(1), predicted)
        self.stop_if_nan(xent, step, 'on the training batch')

    def evaluate(self, step, final=False):
        """Accuracy and loss on all 10,000 test images, and the spread of the variables."""
        g, mnist = self.g, self.mnist
        acc, xent, predicted, values = self.sess.run(
            [g.accuracy, g.cross_entropy, g.prediction, self.variables], self.test_feed)
        weights, biases = values[:len(g.weights)], values[len(g.weights):]
        epoch = self.batches.epoch(step)
        runs.record(self.history['test'], step=step, epoch=epoch, accuracy=float(acc),
                    loss=float(xent), time=self.clock(),
                    weights=dashboard.percentile_bands(weights),
                    biases=dashboard.percentile_bands(biases))
        logging.info('%5d: ********* epoch %.2f ********* test accuracy: %.4f '
                     'test loss: %.4f', step, epoch, acc, xent)
        if self.events:
            wrong = np.flatnonzero(predicted != mnist.test_digits)[:100]
            grid, _ = dashboard.image_grid(mnist.test_images[wrong], mnist.test_digits[wrong],
                                           predicted[wrong])
            self.events.test(step, acc, xent, {v.op.name: value for v, value in
                                               zip(self.variables, values)}, grid)
        if self.board:
            self.board.evaluation(self.history, mnist.test_images, mnist.test_digits,
                                  predicted, final=final)
        self.stop_if_nan(xent, step, 'on the test set')
        self.save('running')

    def close_events(self):
        if self.events:
            self.events.close()

    def finish(self):
        if self.board:
            self.history['dashboard'] = self.board.close()
        self.save('finished')
        return runs.summarize(self.history)


def _duration(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 60}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


def _eta(train_records, iterations):
    """Time left at the pace of the last ~25 log lines, evaluations in; the first
    interval (TensorFlow warming up, the first evaluation) is left out."""
    steps, times = train_records['step'], train_records['time']
    if len(steps) < 3:
        return '...'
    first = max(1, len(steps) - 26)
    pace = (times[-1] - times[first]) / (steps[-1] - steps[first])
    return _duration(pace * (iterations - steps[-1]))


def nan_message(step, where, loss, workdir):
    kept = f' The metrics up to step {step} are in {runs.history_path(workdir)}.' \
        if workdir else ''
    if loss == 'literal':
        return (f'the cross-entropy became NaN {where} at step {step}: with --loss=literal, '
                '-sum(Y_ * log(Y)) takes log(0) = -inf as soon as a softmax probability '
                'underflows to 0, and 0 * -inf = NaN (in a training step the NaN then spreads into '
                'every weight). '
                'Run with --loss=stable (the default), the same formula computed as '
                'log_softmax, which never takes log(0).' + kept)
    return (f'the cross-entropy became NaN {where} at step {step}: training diverged. '
            'Try another --seed or fewer --iterations.' + kept)


def summary_line(history):
    return (f"{history['model']}: final test accuracy {history['final_test_accuracy']:.4f}, "
            f"max {history['max_test_accuracy']:.4f} at step {history['max_test_step']}, "
            f"{history['final_step']} steps in {history['wall_time']:.1f} s "
            f"(the talk: {history['talk_accuracy']})")


# --------------------------------------------------------------------------- entry point

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """The command line (flag_values: where to define it; tests pass their own)."""
    defaults = Config()
    own = dict(flag_values=flag_values)
    flags.DEFINE_enum('model', defaults.model, list(models.NETWORKS),
                      'Which network of the talk to train, in the talk\'s order.', **own)
    flags.DEFINE_integer('iterations', None, 'Training steps (default: the talk\'s count for '
                         'the model: 2,000 for softmax, 10,000 for the others).',
                         lower_bound=1, **own)
    flags.DEFINE_integer('batch_size', defaults.batch_size, 'Training images per step.',
                         lower_bound=1, upper_bound=60000, **own)
    flags.DEFINE_integer('seed', defaults.seed, 'Seeds the initial weights, dropout and the '
                         'data order.', **own)
    flags.DEFINE_string('data_dir', None, 'Directory of the four MNIST IDX files; fetched there '
                        f'when missing (default {data.default_data_dir()}).', **own)
    flags.DEFINE_string('workdir', None, 'Where this run writes its files (default '
                        'runs/<model>-<date>-<time>, and runs/latest points to it); an earlier '
                        'run there is never overwritten.', **own)
    flags.DEFINE_integer('eval_every', defaults.eval_every, 'Evaluate on all 10,000 test '
                         'images every this many steps.', lower_bound=1, **own)
    flags.DEFINE_integer('log_every', defaults.log_every, 'Log training accuracy and loss every '
                         'this many steps.', lower_bound=1, **own)
    flags.DEFINE_integer('checkpoint_every', defaults.checkpoint_every, 'Save a checkpoint every '
                         'this many steps (and at the end, and when stopped by Ctrl-C or '
                         'SIGTERM).', lower_bound=1, **own)
    flags.DEFINE_bool('resume', False, 'Continue the run in --workdir from its latest '
                      'checkpoint, with its settings (--iterations may raise its step count).',
                      **own)
    flags.DEFINE_enum('vis', 'auto', ['auto', *dashboard.MODES], 'The talk\'s dashboard. '
                      'live: an animated window; save: dashboard.png and dashboard.gif in the '
                      'workdir (and .mp4 with ffmpeg); notebook: in the Jupyter cell; none: '
                      'no figure; auto: notebook in a Jupyter kernel, live where a display '
                      'is, else save.', **own)
    flags.DEFINE_bool('sync_replicas', False, 'On a cluster (TF_CONFIG): synchronous '
                      'updates, one gradient of every worker per step (SyncReplicasOptimizer); '
                      'else asynchronous, as TensorFlow 1 did by default.', **own)
    flags.DEFINE_float('cluster_timeout', 120, 'On a cluster: the longest wait, in seconds, for '
                       'another task (a Session call, the chief\'s initialisation).',
                       lower_bound=1, **own)
    flags.DEFINE_enum('loss', defaults.loss, list(models.LOSSES), 'stable: the talk\'s '
                      'cross-entropy computed with log_softmax, never NaN. literal: the talk\'s '
                      'line -sum(Y_ * log(Y)) exactly, which goes NaN once a probability hits 0.',
                      **own)


def config_from_flags():
    """(Config, workdir): the one place flags become settings (the workdir is made by
    runs.prepare_workdir once the data is there). With --resume, the run's
    stored settings, changed only by flags given explicitly; a given flag that
    contradicts a setting the run must keep is refused."""
    names = [f.name for f in dataclasses.fields(Config) if f.name != 'vis']
    vis = dashboard.choose(FLAGS.vis)
    if not FLAGS.resume:
        return Config(**{name: FLAGS[name].value for name in names}, vis=vis), FLAGS.workdir
    given = {name: FLAGS[name].value for name in names if FLAGS[name].present}
    if not FLAGS.workdir:
        raise app.UsageError('--resume needs --workdir, the run to continue')
    run = runs.read_history(FLAGS.workdir)
    for name in Config.FIXED:
        if name in given and given[name] != run[name]:
            raise TrainingError(f'cannot resume {FLAGS.workdir} with --{name}={given[name]}: '
                                f'it was trained with --{name}={run[name]}')
    return Config.of_run(run, **given, vis=vis), FLAGS.workdir


def _stop_on_signals(saving=True):
    """Ctrl-C and SIGTERM ask the loop to stop at the next step (after a checkpoint,
    when `saving`); a second Ctrl-C stops at once."""
    requested = threading.Event()

    def handler(signum, frame):
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()
        logging.warning('%s: %sstopping (Ctrl-C again to stop now)',
                        signal.Signals(signum).name, 'saving a checkpoint and ' if saving else '')

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return requested.is_set


def main(argv):
    del argv
    task = distributed.task_from_environment()  # TF_CONFIG: one task of a cluster
    if task:
        distributed.end_with_launcher()
    if task and task.type == 'ps':
        return distributed.serve_parameters(task, _stop_on_signals(saving=False))
    config, workdir = config_from_flags()
    if task and not task.is_chief:
        config = dataclasses.replace(config, vis='none')  # the chief alone shows and writes
    mnist = data.load(FLAGS.data_dir, log=logging.info)  # a failure here leaves nothing behind
    if task and not task.is_chief:
        distributed.train(mnist, config, None, task, False, _stop_on_signals(saving=False),
                          FLAGS.sync_replicas, FLAGS.cluster_timeout, sys.modules[__name__])
        return 0
    if not FLAGS.resume:
        workdir = runs.prepare_workdir(workdir, config.model)
    logging.info('workdir: %s', workdir)
    try:
        if task:
            history = distributed.train(mnist, config, workdir, task, FLAGS.resume,
                                        _stop_on_signals(), FLAGS.sync_replicas,
                                        FLAGS.cluster_timeout, sys.modules[__name__])
        else:
            history = train(mnist, config, workdir, FLAGS.resume, _stop_on_signals())
    except Interrupted as e:
        logging.warning('%s. Continue with:\n  python -m graph_mnist.train --resume '
                        '--workdir=%s', e, workdir)
        return 130
    except KeyboardInterrupt:
        logging.error('interrupted; the metrics so far are in %s', runs.history_path(workdir))
        return 130
    for path in history.get('dashboard', []):
        logging.info('dashboard: %s', path)
    logging.info('TensorBoard: tensorboard --logdir %s', workdir)
    logging.info('%s', summary_line(history))
    if config.vis == 'live':
        signal.signal(signal.SIGINT, signal.default_int_handler)  # nothing left to save
        logging.info('the dashboard stays on screen: close its window (or Ctrl-C) to exit')
        dashboard.wait_for_windows()
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
