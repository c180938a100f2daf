"""The evaluator task of a cluster (TF_CONFIG task type `evaluator`, outside the training
cluster as TensorFlow defines it): it reads each new checkpoint the chief writes in the
shared --workdir, measures it on the 10,000 test images, and ends after the final one.
Its books go to <workdir>/evaluator: history.json (the test table, as a run's), the
TensorBoard events of the test curves, and history.png (the dashboard's curves, drawn
from that history). With it the chief can train without pausing to evaluate
(--nochief_evaluates); it checkpoints where it would have evaluated.

TensorFlow 1's idiom: `tf.train.checkpoints_iterator` over the checkpoint directory, the
network built alone in a graph of its own (no parameter server: the variables come from
the checkpoint), one Session."""

import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import dashboard
from graph_mnist import events as graph_events
from graph_mnist import runs
from graph_mnist import training
from graph_mnist import training_graph
from graph_mnist.bookkeeping import SessionNet
from graph_mnist.task_session import ClusterError

DIRECTORY = 'evaluator'


def step_of(path):
    return int(path.rpartition('-')[2])


def evaluate(config, workdir, mnist, stop_requested, timeout):
    """Measures every new checkpoint under `workdir` (the newest, when it falls behind,
    as TensorFlow's evaluators do) until the one of the final step (config.iterations)
    or a stop; ClusterError when no new checkpoint comes for `timeout` seconds. A
    restarted evaluator goes on with its history. Returns the evaluator's history."""
    out = os.path.join(workdir, DIRECTORY)
    os.makedirs(out, exist_ok=True)
    g = training_graph.build(config.spec, loss=config.loss, seed=config.seed,
                             precision=config.precision)
    history = (runs.read_history(out) if os.path.isfile(runs.history_path(out))
               else training.new_history(config))
    history['task'] = 'evaluator'
    events = graph_events.EventLog(out, g.graph)
    batches_per_epoch = len(mnist.train_images) / config.batch_size
    seen = history['test']['step'][-1] if history['test']['step'] else -1
    waiting_since = [time.monotonic()]

    def give_up():  # no new checkpoint for `timeout` seconds, or a stop asked for
        return stop_requested() or time.monotonic() - waiting_since[0] > timeout
    try:
        with tf.compat.v1.Session(graph=g.graph) as sess:
            net = SessionNet(sess, g)
            logging.info('evaluator: waiting for the chief\'s checkpoints in %s',
                         checkpoints.directory(workdir))
            for path in tf.train.checkpoints_iterator(checkpoints.directory(workdir),
                                                      min_interval_secs=0.2, timeout=1,
                                                      timeout_fn=give_up):
                waiting_since[0] = time.monotonic()
                step = step_of(path)
                if step <= seen:
                    continue
                try:
                    net.restore(path)
                except Exception as e:  # noqa: BLE001 -- the chief deleted it meanwhile
                    logging.warning('evaluator: checkpoint %s is gone (%s); the next one',
                                    path, str(e).splitlines()[0])
                    continue
                seen = step
                measure(net, mnist, history, events, step, step / batches_per_epoch)
                runs.write_history(out, runs.summarize(history))
                if step >= config.iterations or stop_requested():
                    break
    finally:
        events.close()
        history['status'] = 'finished' if seen >= config.iterations else 'interrupted'
        runs.write_history(out, runs.summarize(history))
        if history['test']['step']:
            dashboard.draw_history(history, os.path.join(out, 'history.png'))
    if seen < config.iterations and not stop_requested():
        raise ClusterError(f'evaluator: no new checkpoint of the chief in '
                           f'{checkpoints.directory(workdir)} for {timeout:g} s '
                           f'(--cluster_timeout); the last evaluated was step {seen}')
    return history


def measure(net, mnist, history, events, step, epoch):
    """One checkpoint's figures on the test images, into the history and the events."""
    acc, xent, predicted, values = net.test(mnist.test_images, mnist.test_labels)
    runs.record(history['test'], step=step, epoch=epoch, accuracy=float(acc),
                loss=float(xent), time=None,
                weights=dashboard.percentile_bands([values[n] for n in net.weight_names]),
                biases=dashboard.percentile_bands([values[n] for n in net.bias_names]))
    wrong = np.flatnonzero(predicted != mnist.test_digits)[:100]
    grid, _ = dashboard.image_grid(mnist.test_images[wrong], mnist.test_digits[wrong],
                                   predicted[wrong])
    events.test(step, acc, xent, values, grid)
    logging.info('%5d: evaluator: test accuracy %.4f, test loss %.4f', step, acc, xent)
