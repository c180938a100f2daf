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
from graph_mnist import models
from graph_mnist import runs
from graph_mnist.styles import eager
from graph_mnist.bookkeeping import Bookkeeping
from graph_mnist.bookkeeping import SessionNet
from graph_mnist.bookkeeping import TrainingError
from graph_mnist.bookkeeping import summary_line
from graph_mnist.errors import UserError

v1 = tf.compat.v1


class SettingsError(UserError, ValueError):
    """Settings that do not go together; the message says which."""


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
    steps_per_run: int = 1     # training steps per Session.run: 1 is the talk's loop; more
                               # moves the loop into the graph (models.training_loop)
    # the talk's experiments (models.with_changes); None: the network's own setting
    learning_rate: float = None  # a constant rate, or the decay's start
    pkeep: float = None          # keep probability of a network with dropout
    layers: int = None           # depth of a dense network, 2 to 5
    style: str = 'graph'         # eager.STYLES: the talk's Session, or TensorFlow 2's

    # what a resumed run must keep; the other settings may change between sessions
    FIXED = ('model', 'seed', 'batch_size', 'loss', *models.EXPERIMENTS, 'style')

    def __post_init__(self):
        if self.model not in models.NETWORKS:
            raise ValueError(f'model must be one of {list(models.NETWORKS)}, got {self.model!r}')
        if self.loss not in models.LOSSES or self.vis not in ('auto', *dashboard.MODES):
            raise ValueError(f'loss must be one of {models.LOSSES}, vis one of '
                             f'{("auto", *dashboard.MODES)}')
        if self.steps_per_run < 1:
            raise SettingsError(f'steps_per_run must be at least 1, got {self.steps_per_run}')
        uneven = [f'--{name}={getattr(self, name)}' for name in
                  ('log_every', 'eval_every', 'checkpoint_every')
                  if getattr(self, name) % self.steps_per_run]
        if uneven:
            raise SettingsError(
                f'--steps_per_run={self.steps_per_run} must divide {", ".join(uneven)}: '
                'the loop in the graph logs, evaluates and checkpoints between its runs')
        try:
            models.with_changes(self.model, **self.changes)
        except ValueError as e:
            raise SettingsError(str(e)) from None
        if self.style not in eager.STYLES:
            raise ValueError(f'style must be one of {eager.STYLES}, got {self.style!r}')
        if self.style != 'graph' and models.NETWORKS[self.model].batch_norm:
            raise SettingsError(f'--style={self.style} trains the talk\'s networks '
                                f'({", ".join(models.TALK)}): {self.model}\'s batch norm keeps '
                                'its moving averages in TensorFlow 1 graph collections')
        if self.style != 'graph' and self.steps_per_run > 1:
            raise SettingsError(f'--steps_per_run moves the talk\'s Session loop into the '
                                f'graph; --style={self.style} has no Session loop: leave it at 1')
        object.__setattr__(self, 'vis', dashboard.choose(self.vis))
        if self.iterations is None:
            object.__setattr__(self, 'iterations', models.NETWORKS[self.model].iterations)

    @property
    def changes(self):
        """The talk's experiments this run makes: {name: value} of those given."""
        return {name: getattr(self, name) for name in models.EXPERIMENTS
                if getattr(self, name) is not None}

    @classmethod
    def of_run(cls, history, **changes):
        """The settings stored in a run's history, with `changes`."""
        stored = {f.name: history[f.name] for f in dataclasses.fields(cls) if f.name in history}
        if 'layers' not in history:  # written before the experiments: its pkeep was a fact
            stored.pop('pkeep', None)
        return cls(**{**stored, **changes})


def new_history(config):
    spec = models.with_changes(config.model, **config.changes)
    return runs.new_history(dataclasses.asdict(config), pkeep_in_training=spec.pkeep,
                            talk_accuracy=spec.talk_accuracy, tensorflow=tf.__version__,
                            device=device())


def device():
    """Where TensorFlow places a run's operations: its first GPU when it sees one (its
    default), else the CPU. Written in history.json and logged at the start."""
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return 'CPU'
    name = tf.config.experimental.get_device_details(gpus[0]).get('device_name', '')
    return f'GPU:0 {name}'.strip()


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


def load_training_set(sess, g, images, labels):
    """The training set, into the graph once, for the loop in the graph (g.loop)."""
    sess.run(g.loop['load'], {g.loop['images']: images, g.loop['labels']: labels})


class OneMachine:
    """Where a run trains when it trains alone: this process holds the variables and
    keeps the books, its steps are consecutive. graph_mnist.distributed.Cluster answers
    the same questions for a task of a cluster."""
    holds_variables = False  # a parameter server: serve(stop_requested) instead of training
    keeps_books = True       # evaluates, writes the history, checkpoints, the dashboard

    def build(self, config):
        return models.build(config.model, loss=config.loss, seed=config.seed,
                            loop=config.steps_per_run > 1, changes=config.changes)

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

    def net(self, sess, g):
        """What the books read the network through."""
        return SessionNet(sess, g)

    def first_step(self, sess, g, started):
        return started

    def batch_index(self, step, local_steps):
        return step  # a pure function of the step: a resumed run sees the same batches

    def train_step(self, sess, g, batch_X, batch_Y, step):
        """(the batch's cross-entropy, the step after this one)."""
        return training_step(sess, g, batch_X, batch_Y, step), step + 1

    def train_run(self, sess, g, batches, step, count):
        """`count` training steps from `step` in one Session.run of the loop in the graph,
        on the batches the talk's loop would take: (the last one's cross-entropy, the
        step after them)."""
        loop = g.loop
        indices = np.stack([batches.indices(s) for s in range(step, step + count)])
        xent = sess.run(loop['run'], {loop['indices']: indices, loop['first']: step,
                                      g.pkeep: g.spec.pkeep})
        return xent, step + count

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


class TensorFlow2(OneMachine):
    """Where a run trains in one of TensorFlow 2's styles (--style=function or keras,
    graph_mnist.styles.eager): no Session; the net takes the steps, the same loop and
    books as the talk's."""

    def build(self, config):
        return eager.make(config.style, config.model, config.seed, config.loss,
                          config.changes)

    def open(self, net, start):
        start(net)
        return net

    def net(self, net, _):
        return net

    def train_step(self, net, _, batch_X, batch_Y, step):
        return net.train_step(batch_X, batch_Y, step), step + 1

    def close(self, net):
        pass


def place_for(config):
    """Where a run on this machine trains: the talk's Session, or TensorFlow 2's."""
    return OneMachine() if config.style == 'graph' else TensorFlow2()


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
    place = place or place_for(config)
    g = place.build(config)  # before any value
    batches = place.batches(mnist, config)
    started = {}

    def start(sess):
        started['step'], started['history'] = start_from(place.net(sess, g), config,
                                                         workdir, resume)
    sess = place.open(g, start)
    book = None
    try:
        if g.loop:
            load_training_set(sess, g, batches.images, batches.labels)
        if place.keeps_books:
            book = Bookkeeping(place.net(sess, g), mnist, batches, config, workdir,
                               started['history'], started['step'])
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
        log = book and due('log', step)
        if log or not g.loop:
            batch_X, batch_Y = batches(place.batch_index(step, local_steps))
        if log:
            book.training_batch(step, batch_X, batch_Y)  # the talk's display line
        if book and due('eval', step):
            book.evaluate(step)  # "it is just for display": the test set trains nothing

        if g.loop:  # steps_per_run steps at once, in the graph
            count = min(config.steps_per_run, config.iterations - step)
            xent, after = place.train_run(sess, g, batches, step, count)
            where = f'in the training steps {step} to {after - 1}'
        else:
            count = 1
            xent, after = place.train_step(sess, g, batch_X, batch_Y, step)
            where = 'in the training step'
        if math.isnan(xent):
            if book:
                book.stop_if_nan(xent, step, where)
            raise place.nan(step)
        step, local_steps = after, local_steps + count  # this task's own steps
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


def start_from(net, config, workdir, resume):
    """Restores the latest checkpoint (resume) or initialises the variables of `net`
    (a SessionNet, or a TensorFlow 2 style's net): (first step, history so far)."""
    if not resume:
        net.init()
        return 0, new_history(config)
    found = checkpoints.latest(workdir)
    if not found:
        raise TrainingError(f'no checkpoint in {workdir}: nothing to resume')
    path, step, history = found
    net.restore(path)
    if step >= config.iterations:
        raise TrainingError(f'the run in {workdir} has already trained {step} steps; '
                            'pass a larger --iterations to train on')
    history.update(dataclasses.asdict(config))  # the settings of this session
    logging.info('resuming from %s at step %d', path, step)
    return step, history


# ---------------------------------------------------------------- the command's job


def periods_for_the_runs(settings, given):
    """With the loop in the graph, the periods the user did not give (log, evaluation,
    checkpoint) rounded up to whole runs: `--steps_per_run=100` alone logs every 100
    steps instead of 20. Given ones are kept (Config refuses them when they do not fit)."""
    n = settings.get('steps_per_run') or 1
    fitted = dict(settings)
    for name in ('log_every', 'eval_every', 'checkpoint_every'):
        if name not in given and name in fitted and fitted[name] % n:
            fitted[name] = -(-fitted[name] // n) * n
            logging.info('--%s=%d: whole runs of --steps_per_run=%d', name, fitted[name], n)
    return fitted


def config_to_resume(workdir, settings, given):
    """The settings of the run in `workdir`, changed by the `given` names of `settings`
    (the flags given explicitly); one that contradicts what the run must keep is
    refused."""
    run = runs.read_history(workdir)
    for name in Config.FIXED:
        if name in given and settings[name] != run.get(name):
            raise TrainingError(f'cannot resume {workdir} with --{name}={settings[name]}: '
                                f'it was trained with --{name}={run.get(name)}')
    changes = {name: settings[name] for name in given if name != 'vis'}
    return Config.of_run(run, **changes, vis=settings.get('vis', 'auto'))


def train_and_evaluate(settings, workdir=None, data_dir=None, resume=False, given=(),
                       place=None):
    """What `python -m graph_mnist.train` does; its exit code.

    settings: Config's fields by name (the flags); given: those the user gave (they
    change a resumed run's stored settings); place: None for this machine (the talk's
    Session or TensorFlow 2's, as --style says) or a cluster task
    (graph_mnist.distributed.from_environment). Installs the Ctrl-C/SIGTERM handlers,
    loads the data (a failure there leaves nothing behind), makes the workdir, trains,
    and logs where everything is."""
    chosen, place = place, place or OneMachine()  # until the settings say which
    stop_requested = cli.stop_on_signals(saving=place.keeps_books)
    if place.holds_variables:
        return place.serve(stop_requested)
    settings = periods_for_the_runs(settings, given)
    config = config_to_resume(workdir, settings, given) if resume else Config(**settings)
    place = chosen or place_for(config)
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
