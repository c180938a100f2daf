"""Checkpoints of a run, each with the metrics history of exactly the steps it holds.

    <workdir>/checkpoints/model.ckpt-<step>.*     the variables (tf.compat.v1.train.Saver)
    <workdir>/checkpoints/history-<step>.json     the history up to that step
    <workdir>/checkpoints/checkpoint              which one is the latest (Saver's index)

The history file is written (atomically) before the Saver writes its files and, last,
the index: a run killed at any moment leaves a latest checkpoint whose history is
there. The Saver itself writes to temporary files and renames them.
"""

import contextlib
import glob
import json
import os
import re

import tensorflow as tf

from graph_mnist import files
from graph_mnist.errors import UserError

v1 = tf.compat.v1

DIRECTORY = 'checkpoints'


class CheckpointError(UserError):
    """A checkpoint is missing or cannot be loaded; the message says which and why."""


def directory(workdir):
    return os.path.join(workdir, DIRECTORY)


def save(sess, saver, workdir, step, history):
    """Saves the variables after `step` training steps, with `history` up to that step."""
    folder = directory(workdir)
    os.makedirs(folder, exist_ok=True)
    files.write_json(os.path.join(folder, f'history-{step}.json'), history)
    # Saver is TF1 API: it wants its graph as default. Deleting the oldest checkpoint, it
    # warns that its own internals are deprecated: not a word for our users (a notebook
    # would show it under every training cell), so TensorFlow's logger is held at ERROR
    # for that call only.
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel('ERROR')
    try:
        with _graph_of(sess):
            path = saver.save(sess, os.path.join(folder, 'model.ckpt'), global_step=step)
    finally:
        logger.setLevel(level)
    state = v1.train.get_checkpoint_state(folder)
    kept = {_step_of(p) for p in state.all_model_checkpoint_paths}
    for old in glob.glob(os.path.join(folder, 'history-*.json')):
        if int(re.search(r'history-(\d+)\.json$', old).group(1)) not in kept:
            os.remove(old)
    return path


def _graph_of(sess):
    """The Session's graph as default (Saver is TF1 API); sess None: eager TensorFlow 2
    (graph_mnist.styles.eager), whose Saver was given its variables."""
    return sess.graph.as_default() if sess is not None else contextlib.nullcontext()


def _step_of(path):
    return int(path.rsplit('-', 1)[1])


def latest(workdir):
    """(path, step, history) of the latest checkpoint, or None when there is none."""
    path = v1.train.latest_checkpoint(directory(workdir))
    if path is None:
        return None
    step = _step_of(path)
    try:
        with open(os.path.join(directory(workdir), f'history-{step}.json')) as f:
            history = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{path}: its metrics history cannot be read ({e})') from None
    return path, step, history


def restore(sess, saver, path):
    """Loads a checkpoint into the session; a damaged one raises CheckpointError."""
    try:
        with _graph_of(sess):
            saver.restore(sess, path)
        # let this Saver manage (and in time delete) the checkpoints saved before
        state = v1.train.get_checkpoint_state(os.path.dirname(path))
        saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError):
        raise  # on a cluster: another task is not answering, the checkpoint may be fine
    except (tf.errors.OpError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f'the checkpoint {path} cannot be loaded, it is damaged or incomplete '
            f'({type(e).__name__}: {reason[:200]}). Delete it (and its line in '
            f'{os.path.join(os.path.dirname(path), "checkpoint")}) to resume from an '
            'earlier one, or start a new run.') from None
