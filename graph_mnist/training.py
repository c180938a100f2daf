"""The training library: one network of the talk trained with a tf.compat.v1 Session
and a feed_dict loop, and everything a run keeps beside its steps.

The graph is built first (graph_mnist.models); then a Session runs its training step
once per batch of 100 images, feeding them through the placeholders X and Y_, as in
the talk. Every `log_every` steps: accuracy and cross-entropy on the current batch;
every `eval_every` steps: the same on all 10,000 test images. The metrics history is
written to <workdir>/history.json as it grows (graph_mnist.runs).

    train(mnist, Config(...), workdir)      the whole run, for tests, notebooks, scripts
    train_and_evaluate(settings, workdir)   the command's whole job (signals, data,
                                            workdir, run, closing lines): what
                                            `python -m graph_mnist.train` calls

One loop for every place a run trains: this process alone (`OneMachine`), or one task
of a cluster (graph_mnist.distributed.Cluster, which says what differs there: where the
graph lives, how the Session starts, a global step that jumps, the chief alone keeping
the books). Never run as __main__: graph_mnist.train is the entry point.
"""

import dataclasses
import math
import signal
import time

from absl import logging
import numpy as np
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import cli
from graph_mnist import dashboard
from graph_mnist import data
from graph_mnist import events as graph_events
from graph_mnist import models
from graph_mnist import runs
from graph_mnist.errors import UserError

v1 = tf.compat.v1


class TrainingError(UserError):
    """A run that cannot go on (loss gone NaN, nothing to resume); the message says why."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings of one run: built from the flags in one place (graph_mnist.train),
    stored field by field in its history.json, read back from there to resume it."""
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


# --------------------------------------------------------------------- one machine


def open_session(g):
    """The Session a network's training runs in (also what the benchmark times)."""
    return v1.Session(graph=g.graph, config=g.config)


def training_step(sess, g, batch_X, batch_Y, step):
    """The talk's training step: gradients on this batch, one small step down them.
    Returns the batch's cross-entropy (computed on the way, fetched to catch a NaN)."""
    _, xent = sess.run([g.train_step, g.cross_entropy],
                       {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep, g.step: step})
    return xent


class OneMachine:
    """Where a run trains when it trains alone: this process holds the variables and
    keeps the books, its steps are consecutive. graph_mnist.distributed.Cluster answers
    the same questions for a task of a cluster."""
    holds_variables = False  # a parameter server: serve(stop_requested) instead of training
    keeps_books = True       # evaluates, writes the history, checkpoints, the dashboard

    def build(self, config):
        return models.build(config.model, loss=config.loss, seed=config.seed)

    def batches(self, mnist, config):
        return data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                            config.seed)

    def open(self, g, start):
        """A Session with the variables initialised or restored by `start(sess)`.
        As in the talk: sess = tf.Session(); sess.run(init)."""
        sess = open_session(g)
        try:
            start(sess)
        except BaseException:
            sess.close()
            raise
        return sess

    def first_step(self, sess, g, started):
        return started

    def batch_index(self, step, local_steps):
        return step  # a pure function of the step: a resumed run sees the same batches

    def train_step(self, sess, g, batch_X, batch_Y, step):
        """(the batch's cross-entropy, the step after this one)."""
        return training_step(sess, g, batch_X, batch_Y, step), step + 1

    def nan(self, step):
        return None  # the bookkeeping reports it

    def progress(self, local_steps, step):
        pass

    def ran(self, local_steps, seconds, first, step):
        pass

    def final_step(self, sess, g, step, iterations):
        return iterations

    def finished(self, sess, g, history, local_steps, seconds):
        pass

    def failure(self, error):
        return None  # TensorFlow's own error goes up as it is

    def close(self, sess):
        sess.close()


# --------------------------------------------------------------------------- the loop


def train(mnist, config=Config(), workdir=None, resume=False, stop_requested=None,
          place=None):
    """Trains `config.model` on `mnist` (a data.Mnist); returns the metrics history
    (None for a cluster task that does not keep the books).

    With a workdir: the history is written there at every test evaluation, TensorBoard
    event files beside it, and a checkpoint every `config.checkpoint_every` steps and at
    the end. resume: continue the workdir's run from its latest checkpoint.
    stop_requested: a callable polled before every step; when it answers True, a
    checkpoint is saved and Interrupted raised. A loss gone NaN raises TrainingError
    after writing the history. place: OneMachine() (default) or a cluster task.
    """
    place = place or OneMachine()
    g = place.build(config)  # before any value
    batches = place.batches(mnist, config)
    started = {}

    def start(sess):
        started['step'], started['history'] = start_from(sess, g, config, workdir, resume)
    sess = place.open(g, start)
    book = None
    try:
        if place.keeps_books:
            book = Bookkeeping(sess, g, mnist, batches, config, workdir, started['history'],
                               started['step'])
        return _loop(sess, g, batches, book, place, config, started.get('step'),
                     stop_requested)
    except KeyboardInterrupt:  # no stop_requested handler (a plain call): no checkpoint
        if book:
            book.save('interrupted')
        raise
    except tf.errors.OpError as e:
        failure = place.failure(e)
        if failure is None:
            raise
        if book:
            book.save('interrupted')
        raise failure from None
    finally:
        place.close(sess)
        if book:
            book.close_events()


class _Marks:
    """When a periodic task is due. On one machine the step goes 1 by 1 and a task is
    due at each multiple of its period; on a cluster the global step jumps (every
    worker adds to it), and a task is due at the first step seen past a new multiple.
    A run that starts at `first` checkpoints at the next multiple after it, logs and
    evaluates at the first multiple from it on."""

    def __init__(self, first, config):
        self.every = {'checkpoint': config.checkpoint_every, 'log': config.log_every,
                      'eval': config.eval_every}
        self.last = {'checkpoint': first // config.checkpoint_every,
                     'log': -(-first // config.log_every) - 1,
                     'eval': -(-first // config.eval_every) - 1}

    def __call__(self, kind, step):
        mark = step // self.every[kind]
        if mark <= self.last[kind]:
            return False
        self.last[kind] = mark
        return True


def _loop(sess, g, batches, book, place, config, started, stop_requested):
    step = first = place.first_step(sess, g, started)
    due, local_steps, began = _Marks(step, config), 0, time.perf_counter()
    while step < config.iterations:
        if stop_requested and stop_requested():
            if book:
                raise Interrupted(step, book.stop(step))
            break
        if book and due('checkpoint', step):
            book.checkpoint(step)
        batch_X, batch_Y = batches(place.batch_index(step, local_steps))
        if book and due('log', step):
            book.training_batch(step, batch_X, batch_Y)  # the talk's display line
        if book and due('eval', step):
            book.evaluate(step)  # "it is just for display": the test set trains nothing

        xent, after = place.train_step(sess, g, batch_X, batch_Y, step)
        if math.isnan(xent):
            if book:
                book.stop_if_nan(xent, step, 'in the training step')
            raise place.nan(step)
        step, local_steps = after, local_steps + 1
        place.progress(local_steps, step)
    seconds = time.perf_counter() - began
    place.ran(local_steps, seconds, first, step)
    if not book:
        return None
    final = place.final_step(sess, g, step, config.iterations)
    book.evaluate(final, final=True)
    book.checkpoint(final, final=True)
    place.finished(sess, g, book.history, local_steps, seconds)
    return book.finish()


def start_from(sess, g, config, workdir, resume):
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


# ---------------------------------------------------------------- the command's job


def config_to_resume(workdir, settings, given):
    """The settings of the run in `workdir`, changed by the `given` names of `settings`
    (the flags given explicitly); one that contradicts what the run must keep is
    refused."""
    run = runs.read_history(workdir)
    for name in Config.FIXED:
        if name in given and settings[name] != run[name]:
            raise TrainingError(f'cannot resume {workdir} with --{name}={settings[name]}: '
                                f'it was trained with --{name}={run[name]}')
    changes = {name: settings[name] for name in given if name != 'vis'}
    return Config.of_run(run, **changes, vis=settings.get('vis', 'auto'))


def train_and_evaluate(settings, workdir=None, data_dir=None, resume=False, given=(),
                       place=None):
    """What `python -m graph_mnist.train` does; its exit code.

    settings: Config's fields by name (the flags); given: those the user gave (they
    change a resumed run's stored settings); place: OneMachine() or a cluster task
    (graph_mnist.distributed.from_environment). Installs the Ctrl-C/SIGTERM handlers,
    loads the data (a failure there leaves nothing behind), makes the workdir, trains,
    and logs where everything is."""
    place = place or OneMachine()
    stop_requested = cli.stop_on_signals(saving=place.keeps_books)
    if place.holds_variables:
        return place.serve(stop_requested)
    config = config_to_resume(workdir, settings, given) if resume else Config(**settings)
    if not place.keeps_books:
        config = dataclasses.replace(config, vis='none')  # the chief alone shows and writes
    mnist = data.load(data_dir, log=logging.info)
    if not place.keeps_books:
        train(mnist, config, None, False, stop_requested, place)
        return 0
    if not resume:
        workdir = runs.prepare_workdir(workdir, config.model)
    logging.info('workdir: %s', workdir)
    try:
        history = train(mnist, config, workdir, resume, stop_requested, place)
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
