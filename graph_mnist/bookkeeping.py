"""Everything a run keeps beside its training steps: the history and its file, the
clock and the ETA, TensorBoard events, the dashboard, checkpoints, the NaN watch and the
summary line. One implementation for every style: a training loop (graph_mnist.training's,
a style's, a Keras callback's) calls it in plain calls; it drives nothing and calls
nothing back. It reads the network through a small interface: SessionNet for a Session,
graph_mnist.styles.eager's nets for TensorFlow 2."""

import math
import time

from absl import logging
import numpy as np

from graph_mnist import checkpoints
from graph_mnist import dashboard
from graph_mnist import events as graph_events
from graph_mnist import runs
from graph_mnist import talk
from graph_mnist.errors import UserError


class TrainingError(UserError):
    """A run that cannot go on (loss gone NaN, nothing to resume); the message says why."""


class Interrupted(Exception):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint."""

    def __init__(self, step, path):
        super().__init__(f'stopped at step {step}; checkpoint saved: {path}')
        self.step, self.path = step, path


class SessionNet:
    """A network trained in a Session (the talk's style), as the books ask it: the same
    questions graph_mnist.styles.eager's nets answer for TensorFlow 2's styles."""

    def __init__(self, sess, g):
        self.sess, self.g, self.spec, self.graph = sess, g, g.spec, g.graph
        self.parameters = g.parameters
        self.weight_names = [v.op.name for v in g.weights]
        self.bias_names = [v.op.name for v in g.biases]
        self._variables = g.weights + g.biases

    def init(self):
        self.sess.run(self.g.init)  # as in the talk: sess.run(init)

    def restore(self, path):
        checkpoints.restore(self.sess, self.g.saver, path)

    def save(self, workdir, step, history):
        return checkpoints.save(self.sess, self.g.saver, workdir, step, history)

    def measure(self, X, Y_, step):
        """(accuracy, cross-entropy, learning rate, predicted digits) on a batch, all
        neurons on (pkeep 1)."""
        g = self.g
        return self.sess.run([g.accuracy, g.cross_entropy, g.lr, g.prediction],
                             {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: step})

    def test(self, images, labels):
        """(accuracy, cross-entropy, predicted digits, {name: value} of the variables)."""
        g = self.g
        acc, xent, predicted, values = self.sess.run(
            [g.accuracy, g.cross_entropy, g.prediction, self._variables],
            g.test_feed(images, labels))
        return acc, xent, predicted, dict(zip(self.weight_names + self.bias_names, values))


class Bookkeeping:
    """Everything a run keeps beside its training steps: the history and its file, the
    clock, TensorBoard events, the dashboard, checkpoints, the NaN watch. `net` is what
    the books read the network through: a SessionNet, or a TensorFlow 2 style's net.
    A context manager: leaving it closes the event files, and on Ctrl-C without a stop
    handler (a plain call) marks the history interrupted."""

    def __init__(self, net, mnist, batches, config, workdir, history, first_step,
                 for_evaluator=False, evaluates=True):
        self.net, self.mnist, self.batches = net, mnist, batches
        self.for_evaluator, self.evaluates = for_evaluator, evaluates
        self.saved = None  # the step of the last checkpoint
        self.config, self.workdir, self.history = config, workdir, history
        self.board = None
        if config.vis != 'none':
            changed = talk.describe_changes(config.spec)
            self.board = dashboard.Dashboard(
                config.vis, workdir, f'{config.model}, seed {config.seed}'
                + ('' if config.style == 'graph' else f', --style={config.style}')
                + ('' if config.precision == 'float32' else f', {config.precision}')
                + (f'; changed: {changed}' if changed else ''),
                evaluations=(config.iterations - first_step) // config.eval_every + 2)
        self.events = graph_events.EventLog(workdir, net.graph) if workdir else None
        logging.info('%s: %s trainable parameters, %s, %d steps of %d images, pkeep %.2f, '
                     'loss %s, on %s%s', config.model, f'{net.parameters:,}',
                     net.spec.optimizer.__name__, config.iterations, config.batch_size,
                     net.spec.pkeep, config.loss, history.get('device', 'CPU'),
                     ('' if config.style == 'graph' else f', --style={config.style}')
                     + ('' if config.precision == 'float32' else f', in {config.precision}'))
        self.marks = _Marks(first_step, config)
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
        self.saved = step
        return self.net.save(self.workdir, step, runs.history_before(self.history, step))

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if kind is KeyboardInterrupt:
            self.save('interrupted')
        if self.events:
            self.events.close()

    def due(self, kind, step):
        """Whether the log line ('log'), the test evaluation ('eval') or a checkpoint
        ('checkpoint') is due at this step. A cluster's chief (`for_evaluator`) also
        checkpoints where it evaluates, for an evaluator task to read, and evaluates
        itself only if `evaluates`."""
        due = self.marks(kind, step)
        if kind == 'eval' and due and self.for_evaluator:
            self.checkpoint(step)
            if not self.evaluates:
                self.save('running')  # the history --resume reads, as an evaluation would
            return self.evaluates
        if kind == 'checkpoint' and due and self.for_evaluator and step == self.saved:
            return False  # saved a moment ago, for the evaluator
        return due

    def stop(self, step):
        """A checkpoint, the history marked interrupted, then Interrupted raised."""
        path = self.checkpoint(step)
        self.save('interrupted')
        raise Interrupted(step, path)

    def watch(self, xent, step, after):
        """The NaN watch on the cross-entropy of the training steps from `step` to
        before `after`."""
        if after - step == 1:
            self.stop_if_nan(xent, step, 'in the training step')
        else:
            self.stop_if_nan(xent, step, f'in the training steps {step} to {after - 1}')

    def stop_if_nan(self, xent, step, where):
        if math.isnan(xent):
            self.history['nan_step'], self.history['nan_where'] = step, where
            self.save('nan')
            raise TrainingError(nan_message(step, where, self.config.loss, self.workdir))

    def training_batch(self, step, batch_X, batch_Y):
        """This batch's accuracy and loss, all neurons on (pkeep 1), logged and kept."""
        acc, xent, lr, predicted = self.net.measure(batch_X, batch_Y, step)
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
        net, mnist = self.net, self.mnist
        acc, xent, predicted, values = net.test(mnist.test_images, mnist.test_labels)
        weights = [values[name] for name in net.weight_names]
        biases = [values[name] for name in net.bias_names]
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
            self.events.test(step, acc, xent, values, grid)
        if self.board:
            self.board.evaluation(self.history, mnist.test_images, mnist.test_digits,
                                  predicted, final=final)
        self.stop_if_nan(xent, step, 'on the test set')
        self.save('running')

    def finish(self, step):
        """The final evaluation and checkpoint at `step`, the dashboard's files, the
        history marked finished: the history with its summary."""
        self.evaluate(step, final=True)
        self.checkpoint(step, final=True)
        if self.board:
            self.history['dashboard'] = self.board.close()
        self.save('finished')
        return runs.summarize(self.history)


class _Marks:
    """When a periodic task is due. On one machine the step goes 1 by 1 (or by
    --steps_per_run) and a task is due at each multiple of its period; on a cluster the
    global step jumps (every worker adds to it), and a task is due at the first step
    seen past a new multiple. A run that starts at `first` checkpoints at the next
    multiple after it, logs and evaluates at the first multiple from it on."""

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
                'underflows to 0, and 0 * -inf = NaN (in a training step the NaN then spreads '
                'into every weight). '
                'Run with --loss=stable (the default), the same formula computed as '
                'log_softmax, which never takes log(0).' + kept)
    return (f'the cross-entropy became NaN {where} at step {step}: training diverged. '
            'Try another --seed or fewer --iterations.' + kept)


def summary_line(history):
    """The run's last line; the talk's words beside it only where the run is the talk's
    (its network, settings and number of steps): a 50-step run is not judged by them."""
    line = (f"{history['model']}: final test accuracy {history['final_test_accuracy']:.4f}, "
            f"max {history['max_test_accuracy']:.4f} at step {history['max_test_step']}, "
            f"{history['final_step']} steps in {history['wall_time']:.1f} s")
    spec = talk.NETWORKS[history['model']]
    as_in_the_talk = history['final_step'] == spec.iterations and not any(
        history.get(name) is not None for name in talk.EXPERIMENTS)
    return line + (f" (the talk: {history['talk_accuracy']})" if as_in_the_talk else '')
