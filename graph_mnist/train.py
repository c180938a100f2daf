r"""Trains one network of the talk with a tf.compat.v1 Session and a feed_dict loop.

    python -m graph_mnist.train --model=conv_dropout

The graph is built first (graph_mnist.models); then a Session runs its training step
once per batch of 100 images, feeding them through the placeholders X and Y_, as in
the talk. Every --log_every steps: accuracy and cross-entropy on the current batch;
every --eval_every steps: the same on all 10,000 test images. The metrics history is
written to <workdir>/history.json as it grows.
"""

if __name__ == '__main__':  # before TensorFlow is imported: process-wide, entry point only
    from graph_mnist import quiet
    quiet.quiet_tensorflow()

import datetime
import json
import math
import os
import signal
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
from graph_mnist import events as graph_events
from graph_mnist import files
from graph_mnist import models

v1 = tf.compat.v1

HISTORY = 'history.json'


class TrainingError(Exception):
    """A run that cannot go on (loss gone NaN, workdir unusable); the message says why."""


# --------------------------------------------------------------------------- history


def new_history(model, loss, seed, batch_size, iterations):
    spec = models.NETWORKS[model]
    return {
        'model': model, 'loss': loss, 'seed': seed, 'batch_size': batch_size,
        'iterations': iterations, 'pkeep': spec.pkeep, 'talk_accuracy': spec.talk_accuracy,
        'tensorflow': tf.__version__, 'status': 'running',
        # one list per quantity, aligned by index, ready to plot
        'train': {'step': [], 'accuracy': [], 'loss': [], 'lr': [], 'time': []},
        # weights / biases: edges of their percentile buckets (dashboard.PERCENTILES)
        'test': {'step': [], 'epoch': [], 'accuracy': [], 'loss': [], 'time': [],
                 'weights': [], 'biases': []},
    }


def summarize(history):
    """Adds final / max test accuracy (and the step of the max) to the history."""
    test = history['test']
    if test['accuracy']:
        best = int(np.argmax(test['accuracy']))
        history['final_test_accuracy'] = test['accuracy'][-1]
        history['final_step'] = test['step'][-1]
        history['max_test_accuracy'] = test['accuracy'][best]
        history['max_test_step'] = test['step'][best]
    return history


def write_history(workdir, history):
    """Atomic: a reader never sees half a file, even if the run is killed mid-write."""
    files.write_json(os.path.join(workdir, HISTORY), summarize(history))


def read_history(workdir):
    with open(os.path.join(workdir, HISTORY)) as f:
        return json.load(f)


def prepare_workdir(workdir, model):
    """Creates the run's directory; refuses one that already holds a run."""
    if workdir is None:
        stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
        workdir = os.path.join('runs', f'{model}-{stamp}')
        suffix = 1
        while os.path.exists(workdir):  # two runs started within a second
            suffix += 1
            workdir = os.path.join('runs', f'{model}-{stamp}-{suffix}')
    if os.path.exists(os.path.join(workdir, HISTORY)):
        raise TrainingError(f'{workdir} already holds a run ({HISTORY}); choose another '
                            '--workdir or delete that one')
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, '.writable')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise TrainingError(f'cannot write into the workdir {workdir}: {e.strerror}') from None
    return workdir


# --------------------------------------------------------------------------- the loop


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


def _record(table, **values):
    for key, value in values.items():
        # NaN is not JSON: a loss gone NaN is written as null
        table[key].append(None if isinstance(value, float) and math.isnan(value) else value)


def history_before(history, step):
    """The history as it was before `step`: what a checkpoint at `step` holds."""
    kept = dict(history)
    for split in ('train', 'test'):
        count = sum(1 for s in history[split]['step'] if s < step)
        kept[split] = {key: values[:count] for key, values in history[split].items()}
    return kept


def open_session(g):
    """The Session a network's training runs in (also what scripts/benchmark.py times)."""
    return v1.Session(graph=g.graph, config=g.config)


def training_step(sess, g, batch_X, batch_Y, step):
    """The talk's training step: gradients on this batch, one small step down them.
    Returns the batch's cross-entropy (computed on the way, fetched to catch a NaN)."""
    _, xent = sess.run([g.train_step, g.cross_entropy],
                       {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep, g.step: step})
    return xent


class Interrupted(Exception):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint."""

    def __init__(self, step, path):
        super().__init__(f'stopped at step {step}; checkpoint saved: {path}')
        self.step, self.path = step, path


def train(mnist, model='conv_dropout', iterations=None, batch_size=100, seed=0,
          loss='stable', eval_every=100, log_every=20, workdir=None, vis='none',
          checkpoint_every=1000, resume=False, stop_requested=None):
    """Trains `model` on `mnist` (a data.Mnist); returns the metrics history (a dict).

    With a workdir: the history is written there at every test evaluation, TensorBoard
    event files beside it, and a checkpoint every `checkpoint_every` steps and at the
    end. resume: continue the workdir's run from its latest checkpoint. vis: 'live' or
    'save' for the dashboard (graph_mnist.dashboard), 'none' for none. stop_requested:
    a callable polled before every step; when it answers True, a checkpoint is saved and
    Interrupted raised. A loss gone NaN raises TrainingError after writing the history.
    """
    g = models.build(model, loss=loss, seed=seed)  # the whole graph, before any value
    spec = g.spec
    iterations = iterations or spec.iterations
    batches = data.Batches(mnist.train_images, mnist.train_labels, batch_size, seed)
    test_feed = {g.X: mnist.test_images, g.Y_: mnist.test_labels, g.pkeep: 1.0}
    variables = g.weights + g.biases

    # As in the talk: sess = tf.Session(); sess.run(init). Not `with sess:`, which would
    # make the training graph the default and keep eager TensorBoard writes out.
    sess = open_session(g)
    try:  # until the loop's own try: a failed start closes the Session too
        first_step, elapsed_before = 0, 0.0
        found = checkpoints.latest(workdir) if resume else None
        if found:
            path, first_step, history = found
            checkpoints.restore(sess, g.saver, path)
            history['iterations'] = iterations
            elapsed_before = history.get('elapsed', 0.0)
            logging.info('resuming from %s at step %d', path, first_step)
        else:
            if resume:
                raise TrainingError(f'no checkpoint in {workdir}: nothing to resume')
            sess.run(g.init)
            history = new_history(model, loss, seed, batch_size, iterations)
        if first_step >= iterations:
            raise TrainingError(f'the run in {workdir} has already trained {first_step} steps; '
                                'pass a larger --iterations to train on')

        board = None
        if vis in ('live', 'save'):
            board = dashboard.Dashboard(vis, workdir, f'{model}, seed {seed}',
                                        evaluations=(iterations - first_step) // eval_every + 2)
        events = graph_events.EventLog(workdir, g.graph) if workdir else None
    except BaseException:
        sess.close()
        raise

    logging.info('%s: %s trainable parameters, %s, %d steps of %d images, pkeep %.2f, '
                 'loss %s', model, f'{models.trainable_parameters(g):,}',
                 spec.optimizer.__name__, iterations, batch_size, spec.pkeep, loss)
    start = time.perf_counter()

    def clock():
        return elapsed_before + time.perf_counter() - start

    def save(status):
        history['status'] = status
        if workdir:
            write_history(workdir, history)

    def checkpoint(step):
        history['elapsed'] = clock()
        return checkpoints.save(sess, g.saver, workdir, step, history_before(history, step))

    def stop_if_nan(xent, step, where):
        if math.isnan(xent):
            history['nan_step'], history['nan_where'] = step, where
            save('nan')
            raise TrainingError(nan_message(step, where, loss, workdir))

    def evaluate(step, final=False):
        # "It is just for display": the test set never trains anything.
        acc, xent, predicted, values = sess.run(
            [g.accuracy, g.cross_entropy, g.prediction, variables], feed_dict=test_feed)
        weights, biases = values[:len(g.weights)], values[len(g.weights):]
        _record(history['test'], step=step, epoch=batches.epoch(step),
                accuracy=float(acc), loss=float(xent), time=clock(),
                weights=dashboard.percentile_bands(weights),
                biases=dashboard.percentile_bands(biases))
        logging.info('%5d: ********* epoch %.2f ********* test accuracy: %.4f '
                     'test loss: %.4f', step, batches.epoch(step), acc, xent)
        if events:
            wrong = np.flatnonzero(predicted != mnist.test_digits)[:100]
            grid, _ = dashboard.image_grid(mnist.test_images[wrong], mnist.test_digits[wrong],
                                           predicted[wrong])
            events.test(step, acc, xent, {v.op.name: value for v, value in
                                          zip(variables, values)}, grid)
        if board:
            board.evaluation(history, mnist.test_images, mnist.test_digits, predicted,
                             final=final)
        stop_if_nan(xent, step, 'on the test set')
        save('running')

    history['loop_started_at'] = time.time()  # wall clock: scripts/benchmark.py's start-up
    try:
        for step in range(first_step, iterations):
            if stop_requested and stop_requested():
                path = checkpoint(step) if workdir else None
                save('interrupted')
                raise Interrupted(step, path)
            if workdir and step > first_step and step % checkpoint_every == 0:
                checkpoint(step)
            batch_X, batch_Y = batches(step)

            if step % log_every == 0:
                # the talk's display line: this batch's accuracy and loss, all neurons on
                acc, xent, lr, predicted = sess.run(
                    [g.accuracy, g.cross_entropy, g.lr, g.prediction],
                    {g.X: batch_X, g.Y_: batch_Y, g.pkeep: 1.0, g.step: step})
                _record(history['train'], step=step, accuracy=float(acc),
                        loss=float(xent), lr=float(lr), time=clock())
                logging.info('%5d: accuracy: %.4f loss: %.4f (lr: %.6f)   %d/%d, ETA %s',
                             step, acc, xent, lr, step, iterations,
                             _eta(history['train'], iterations))
                if events:
                    events.training(step, acc, xent, lr)
                if board:
                    board.training_batch(batch_X, batch_Y.argmax(1), predicted)
                stop_if_nan(xent, step, 'on the training batch')
            if step % eval_every == 0:
                evaluate(step)

            xent = training_step(sess, g, batch_X, batch_Y, step)
            stop_if_nan(xent, step, 'in the training step')
        evaluate(iterations, final=True)
        history['wall_time'] = clock()
        if workdir:
            checkpoint(iterations)
    except KeyboardInterrupt:  # no stop_requested handler (e.g. a notebook): no checkpoint
        save('interrupted')
        raise
    finally:
        sess.close()
        if events:
            events.close()
    if board:
        history['dashboard'] = board.close()
    save('finished')
    return summarize(history)


def nan_message(step, where, loss, workdir):
    kept = f' The metrics up to step {step} are in {workdir}/{HISTORY}.' if workdir else ''
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


def define_flags():
    """The command line; defined by the entry point only, so that the modules import
    side by side (train, export, explain all take --workdir)."""
    flags.DEFINE_enum('model', 'conv_dropout', list(models.NETWORKS),
                      'Which network of the talk to train, in the talk\'s order.')
    flags.DEFINE_integer('iterations', None, 'Training steps (default: the talk\'s count for '
                         'the model: 2,000 for softmax, 10,000 for the others).', lower_bound=1)
    flags.DEFINE_integer('batch_size', 100, 'Training images per step.', lower_bound=1,
                         upper_bound=60000)
    flags.DEFINE_integer('seed', 0, 'Seeds the initial weights, dropout and the data order.')
    flags.DEFINE_string('data_dir', None, 'Directory of the four MNIST IDX files; fetched there '
                        f'when missing (default {data.default_data_dir()}).')
    flags.DEFINE_string('workdir', None, 'Where this run writes its files (default '
                        'runs/<model>-<date>-<time>); an earlier run there is never overwritten.')
    flags.DEFINE_integer('eval_every', 100, 'Evaluate on all 10,000 test images every this '
                         'many steps.', lower_bound=1)
    flags.DEFINE_integer('log_every', 20, 'Log training accuracy and loss every this many '
                         'steps.', lower_bound=1)
    flags.DEFINE_integer('checkpoint_every', 1000, 'Save a checkpoint every this many steps '
                         '(and at the end, and when stopped by Ctrl-C or SIGTERM).', lower_bound=1)
    flags.DEFINE_bool('resume', False, 'Continue the run in --workdir from its latest '
                      'checkpoint, with its settings (--iterations may raise its step count).')
    flags.DEFINE_enum('vis', 'auto', ['auto', 'live', 'save', 'none'], 'The talk\'s dashboard. '
                      'live: an animated window; save: dashboard.png and dashboard.gif in the '
                      'workdir (and .mp4 with ffmpeg); none: no figure; auto: live where a '
                      'display is, else save.')
    flags.DEFINE_enum('loss', 'stable', list(models.LOSSES), 'stable: the talk\'s cross-entropy '
                      'computed with log_softmax, never NaN. literal: the talk\'s line '
                      '-sum(Y_ * log(Y)) exactly, which goes NaN once a probability hits 0.')


def _plain_log_format():
    """'I 11:07:42 message' instead of absl's long default prefix."""
    import logging as std_logging

    class Short(std_logging.Formatter):
        def format(self, record):
            return f'{record.levelname[0]} {self.formatTime(record, "%H:%M:%S")} ' \
                   f'{record.getMessage()}'

    logging.get_absl_handler().setFormatter(Short())


def _settings_to_resume(workdir):
    """The settings of the run in `workdir`; explicit flags that contradict them are refused."""
    if not workdir:
        raise app.UsageError('--resume needs --workdir, the run to continue')
    try:
        run = read_history(workdir)
    except (OSError, ValueError) as e:
        raise TrainingError(f'cannot resume: no readable run in {workdir} ({e})') from None
    for flag, key in (('model', 'model'), ('seed', 'seed'), ('batch_size', 'batch_size'),
                      ('loss', 'loss')):
        if FLAGS[flag].present and FLAGS[flag].value != run[key]:
            raise TrainingError(f'cannot resume {workdir} with --{flag}={FLAGS[flag].value}: '
                                f'it was trained with --{flag}={run[key]}')
    return run


def _stop_on_signals():
    """Ctrl-C and SIGTERM ask the loop to stop at the next step (after a checkpoint);
    a second Ctrl-C stops at once."""
    requested = threading.Event()

    def handler(signum, frame):
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()
        logging.warning('%s: saving a checkpoint and stopping (Ctrl-C again to stop now)',
                        signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return requested.is_set


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    _plain_log_format()
    tf.get_logger().setLevel('ERROR')  # deprecation notices of tf.compat.v1
    workdir = FLAGS.workdir
    try:
        settings = {'model': FLAGS.model, 'seed': FLAGS.seed, 'batch_size': FLAGS.batch_size,
                    'loss': FLAGS.loss}
        if FLAGS.resume:
            run = _settings_to_resume(workdir)
            settings = {key: run[key] for key in settings}
            iterations = FLAGS.iterations or run['iterations']
        else:
            iterations = FLAGS.iterations
            workdir = prepare_workdir(workdir, FLAGS.model)
        mnist = data.load(FLAGS.data_dir, log=logging.info)
        logging.info('workdir: %s', workdir)
        vis = FLAGS.vis
        if vis == 'auto':
            vis = 'live' if dashboard.display_available() else 'save'
        history = train(mnist, settings['model'], iterations, settings['batch_size'],
                        settings['seed'], settings['loss'], FLAGS.eval_every, FLAGS.log_every,
                        workdir, vis, FLAGS.checkpoint_every, FLAGS.resume, _stop_on_signals())
    except (data.DataError, TrainingError, dashboard.DashboardError,
            checkpoints.CheckpointError) as e:
        logging.error('%s', e)
        return 1
    except Interrupted as e:
        logging.warning('%s. Continue with:\n  python -m graph_mnist.train --resume '
                        '--workdir=%s', e, workdir)
        return 130
    except KeyboardInterrupt:
        logging.error('interrupted; the metrics so far are in %s/%s', workdir, HISTORY)
        return 130
    for path in history.get('dashboard', []):
        logging.info('dashboard: %s', path)
    logging.info('TensorBoard: tensorboard --logdir %s', workdir)
    logging.info('%s', summary_line(history))
    if vis == 'live':
        signal.signal(signal.SIGINT, signal.default_int_handler)  # nothing left to save
        logging.info('the dashboard stays on screen: close its window (or Ctrl-C) to exit')
        dashboard.wait_for_windows()
    return 0


if __name__ == '__main__':
    define_flags()
    app.run(main)
