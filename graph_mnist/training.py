"""The talk's training loop, in the package: one network trained with a tf.compat.v1
Session, a batch fed through the placeholders X and Y_ at every step.

    train(mnist, Config(...), workdir)      one whole run, for tests, notebooks, scripts
    loop(sess, g, batches, books, ...)      the talk's loop itself, also a cluster
                                            chief's (graph_mnist.distributed)
    train_and_evaluate(settings, workdir)   the command's whole job (signals, data,
                                            workdir, run, closing lines): what
                                            `python -m graph_mnist.train` calls

The graph is built first (graph_mnist.training_graph); then the loop runs its training
step once per batch of 100 images. What a run keeps beside its steps (history,
dashboard, TensorBoard, checkpoints, the NaN watch) is graph_mnist.bookkeeping, called
from the loop in plain calls. TensorFlow 2's styles have loops of their own, in their
own idioms (graph_mnist.styles.eager). Never run as __main__: graph_mnist.train is the
entry point.
"""

import dataclasses
import signal

from absl import logging
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import cli
from graph_mnist import dashboard
from graph_mnist import data
from graph_mnist import runs
from graph_mnist import talk
from graph_mnist import training_graph
from graph_mnist.bookkeeping import Bookkeeping
from graph_mnist.bookkeeping import Interrupted
from graph_mnist.bookkeeping import SessionNet
from graph_mnist.bookkeeping import TrainingError
from graph_mnist.bookkeeping import summary_line
from graph_mnist.errors import UserError
from graph_mnist.styles import eager

v1 = tf.compat.v1

__all__ = ['Config', 'Interrupted', 'SettingsError', 'TrainingError', 'loop', 'train',
           'train_and_evaluate']


class SettingsError(UserError, ValueError):
    """Settings that do not go together; the message says which."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings of one run: built from the flags in one place (graph_mnist.train),
    whose defaults are these; stored field by field in its history.json, read back from
    there to resume it. `spec`, made once here, is the network's talk.Spec with the run's
    experiments applied: what the graph, the styles and the history read."""
    model: str = 'conv_dropout'
    iterations: int = None     # training steps; None: the talk's count for the model
    batch_size: int = 100
    seed: int = 0              # initial weights, dropout and the data order
    loss: str = 'stable'       # training_graph.LOSSES
    eval_every: int = 100      # test evaluations (all 10,000 images)
    log_every: int = 20        # the training batch's accuracy and loss
    checkpoint_every: int = 1000
    vis: str = 'auto'          # the dashboard: dashboard.MODES, or 'auto' (made concrete)
    steps_per_run: int = 1     # training steps per Session.run: 1 is the talk's loop; more
                               # moves the loop into the graph (graph_mnist.graph_loop)
    # the talk's experiments (talk.with_changes); None: the network's own setting
    learning_rate: float = None  # a constant rate, or the decay's start
    pkeep: float = None          # keep probability of a network with dropout
    layers: int = None           # depth of a dense network, 2 to 5
    bias: str = None             # rewrite.BIAS: the talk's + B, or tf.nn.bias_add
    batch_norm: str = None       # rewrite.BATCH_NORM: tf.nn.moments, or fused
    style: str = 'graph'         # eager.STYLES: the talk's Session, or TensorFlow 2's
    precision: str = 'float32'   # training_graph.PRECISIONS: bfloat16 (CPU), float16 (GPU)

    # what a resumed run must keep; the other settings may change between sessions
    FIXED = ('model', 'seed', 'batch_size', 'loss', *talk.EXPERIMENTS, 'style', 'precision')

    def __post_init__(self):
        if self.model not in talk.NETWORKS:
            raise ValueError(f'model must be one of {list(talk.NETWORKS)}, got {self.model!r}')
        if self.loss not in training_graph.LOSSES or self.vis not in ('auto', *dashboard.MODES):
            raise ValueError(f'loss must be one of {training_graph.LOSSES}, vis one of '
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
            object.__setattr__(self, 'spec', talk.with_changes(self.model, **self.changes))
        except ValueError as e:
            raise SettingsError(str(e)) from None
        if self.style not in eager.STYLES:
            raise ValueError(f'style must be one of {eager.STYLES}, got {self.style!r}')
        if self.style != 'graph' and self.spec.batch_norm:
            raise SettingsError(f'--style={self.style} trains the talk\'s networks '
                                f'({", ".join(talk.TALK)}): {self.model}\'s batch norm keeps '
                                'its moving averages in TensorFlow 1 graph collections')
        if self.style == 'keras' and (self.bias or self.batch_norm):
            raise SettingsError('--bias and --batch_norm rewrite the talk\'s graph code '
                                '(graph_mnist.rewrite); --style=keras builds Keras layers, '
                                'which add their biases with BiasAdd already')
        if self.precision not in training_graph.PRECISIONS:
            raise ValueError(f'precision must be one of {training_graph.PRECISIONS}')
        if self.precision != 'float32' and self.style != 'graph':
            raise SettingsError(f'--precision={self.precision} rewrites the talk\'s graph as a '
                                f'Session runs it; --style={self.style} has no Session: leave '
                                'it at float32')
        gpu = self.precision != 'float32' and training_graph.gpu_present()
        if self.precision == 'float16' and not gpu:
            raise SettingsError('--precision=float16 is Grappler\'s GPU rewrite and TensorFlow '
                                'sees no GPU here; on a CPU with bfloat16 instructions, '
                                '--precision=bfloat16')
        if self.precision == 'float16' and self.steps_per_run > 1:
            raise SettingsError('--precision=float16 scales the loss in the talk\'s training '
                                'step; the loop in the graph does not: leave --steps_per_run '
                                'at 1')
        if self.precision == 'bfloat16' and gpu:
            raise SettingsError('--precision=bfloat16 rewrites the operations oneDNN runs on '
                                'the CPU, and here the network runs on the GPU: use '
                                '--precision=float16')
        if self.precision == 'bfloat16' and not training_graph.bfloat16_support():
            raise SettingsError('--precision=bfloat16: this CPU has no bfloat16 instructions '
                                '(no avx512_bf16 or amx_bf16 in /proc/cpuinfo), so oneDNN '
                                'would emulate them, slower than float32: leave it at float32')
        if self.style != 'graph' and self.steps_per_run > 1:
            raise SettingsError(f'--steps_per_run moves the talk\'s Session loop into the '
                                f'graph; --style={self.style} has no Session loop: leave it at 1')
        object.__setattr__(self, 'vis', dashboard.choose(self.vis))
        if self.iterations is None:
            object.__setattr__(self, 'iterations', self.spec.iterations)

    @property
    def changes(self):
        """The talk's experiments this run makes: {name: value} of those given."""
        return {name: getattr(self, name) for name in talk.EXPERIMENTS
                if getattr(self, name) is not None}

    @classmethod
    def of_run(cls, history, **changes):
        """The settings stored in a run's history, with `changes`."""
        stored = {f.name: history[f.name] for f in dataclasses.fields(cls) if f.name in history}
        if 'layers' not in history:  # written before the experiments: its pkeep was a fact
            stored.pop('pkeep', None)
        return cls(**{**stored, **changes})


def new_history(config):
    return runs.new_history(dataclasses.asdict(config), pkeep_in_training=config.spec.pkeep,
                            talk_accuracy=config.spec.talk_accuracy, tensorflow=tf.__version__,
                            device=device())


def device():
    """Where TensorFlow places a run's operations: its first GPU when it sees one (its
    default), else the CPU. Written in history.json and logged at the start."""
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return 'CPU'
    name = tf.config.experimental.get_device_details(gpus[0]).get('device_name', '')
    return f'GPU:0 {name}'.strip()


# --------------------------------------------------------------------------- the loop


def loop(sess, g, batches, books, config, step, stop_requested):
    """The talk's loop: "in a loop, we load a batch of 100 training images and labels. We
    run this training step which adjusts our weights and biases. And we repeat." The
    display line and the test evaluation "it's just for display". Runs from `step` to
    config.iterations; returns the step it reached. With --steps_per_run, the same loop
    fetches the loop in the graph (graph_mnist.graph_loop): that many steps a run."""
    while step < config.iterations:
        if stop_requested():
            books.stop(step)  # a checkpoint, then Interrupted
        batch_X, batch_Y = batches(step)
        if books.due('log', step):  # accuracy and cross-entropy on this batch
            books.training_batch(step, batch_X, batch_Y)
        if books.due('eval', step):  # the same on the 10,000 test images
            books.evaluate(step)
        if books.due('checkpoint', step):
            books.checkpoint(step)
        if not g.loop:
            _, xent, after = sess.run([g.train_step, g.cross_entropy, g.next_step],
                                      {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep,
                                       g.step: step})
        else:
            steps = range(step, min(step + config.steps_per_run, config.iterations))
            xent, after = sess.run([g.loop.cross_entropy, g.loop.next_step],
                                   {g.loop.steps: len(steps), g.loop.first: step,
                                    g.loop.orders: batches.orders(steps),
                                    g.pkeep: g.spec.pkeep})
        books.watch(xent, step, int(after))  # a NaN stops the run, keeping its history
        step = int(after)
    return step


def train(mnist, config=Config(), workdir=None, resume=False, stop_requested=None):
    """Trains `config.model` on `mnist` (a data.Mnist); returns the metrics history.

    With a workdir: the history is written there at every test evaluation, TensorBoard
    event files beside it, and a checkpoint every `config.checkpoint_every` steps and at
    the end. resume: continue the workdir's run from its latest checkpoint.
    stop_requested: a callable polled before every step; when it answers True, a
    checkpoint is saved and Interrupted raised. A loss gone NaN raises TrainingError
    after writing the history. --style=function and keras train in their own loops."""
    stop_requested = stop_requested or (lambda: False)
    batches = data.Batches(mnist.train_images, mnist.train_labels, config.batch_size,
                           config.seed)
    path, history, step = starting_point(config, workdir, resume)
    if config.style != 'graph':
        net = eager.make(config.style, config.spec, config.seed, config.loss)
        if path:
            net.restore(path)
        with Bookkeeping(net, mnist, batches, config, workdir, history, step) as books:
            step = eager.TRAIN[config.style](net, batches, books, config, step,
                                             stop_requested)
            return books.finish(step)
    g = training_graph.build(config.spec, config.loss, config.seed,
                             loop=config.steps_per_run > 1, precision=config.precision)
    with v1.Session(graph=g.graph, config=g.config) as sess:
        sess.run(g.init)  # as in the talk: sess.run(init)
        if path:
            checkpoints.restore(sess, g.saver, path)
        if g.loop:  # the training set, into the graph once
            sess.run(g.loop.load, {g.loop.images: batches.images,
                                   g.loop.labels: batches.labels})
        with Bookkeeping(SessionNet(sess, g), mnist, batches, config, workdir, history,
                         step) as books:
            step = loop(sess, g, batches, books, config, step, stop_requested)
            return books.finish(step)


def starting_point(config, workdir, resume):
    """Where a run starts: (the checkpoint to restore, None for a new run; the history so
    far; the first step)."""
    if not resume:
        return None, new_history(config), 0
    found = checkpoints.latest(workdir)
    if not found:
        raise TrainingError(f'no checkpoint in {workdir}: nothing to resume')
    path, step, history = found
    if step >= config.iterations:
        raise TrainingError(f'the run in {workdir} has already trained {step} steps; '
                            'pass a larger --iterations to train on')
    history.update(dataclasses.asdict(config))  # the settings of this session
    logging.info('resuming from %s at step %d', path, step)
    return path, history, step


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


def config_of(settings, workdir=None, resume=False, given=()):
    """The Config of a run from the flags: `settings` (Config's fields by name) and
    `given` (those the user gave explicitly); resume: the workdir's run's, changed by
    the given ones."""
    settings = periods_for_the_runs(settings, given)
    return config_to_resume(workdir, settings, given) if resume else Config(**settings)


def train_and_evaluate(settings, workdir=None, data_dir=None, resume=False, given=(),
                       trainer=train):
    """What `python -m graph_mnist.train` does; its exit code.

    settings: Config's fields by name (the flags); given: those the user gave (they
    change a resumed run's stored settings). Installs the Ctrl-C/SIGTERM handlers,
    loads the data (a failure there leaves nothing behind), makes the workdir, trains
    with `trainer` (`train`, or a cluster chief's, graph_mnist.distributed), and logs
    where everything is."""
    stop_requested = cli.stop_on_signals()
    config = config_of(settings, workdir, resume, given)
    mnist = data.load(data_dir, log=logging.info)
    if not resume:
        workdir = runs.prepare_workdir(workdir, config.model)
    logging.info('workdir: %s', workdir)
    try:
        history = trainer(mnist, config, workdir, resume, stop_requested)
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
