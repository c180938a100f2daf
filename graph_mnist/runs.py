"""A run's directory and its metrics history, `<workdir>/history.json`.

The history holds the run's settings (training.Config, field by field), then one list per
quantity, aligned by index, ready to plot:

    train: step, accuracy, loss, lr, time          every --log_every steps (the batch)
    test:  step, epoch, accuracy, loss, time,      every --eval_every steps and at the end
           weights, biases                         (all 10,000 test images; the edges of
                                                    the dashboard's percentile bands)

and at the end final / max test accuracy. Every reader of a run goes through here.
"""

import datetime
import json
import math
import os

import numpy as np

from graph_mnist import files
from graph_mnist.errors import UserError

HISTORY = 'history.json'
RUNS = 'runs'      # where a run goes when no --workdir is given
LATEST = 'latest'  # runs/latest: a link to the newest of them


class WorkdirError(UserError):
    """The workdir cannot take this run."""


def history_path(workdir):
    return os.path.join(workdir, HISTORY)


def new_history(settings, **facts):
    """An empty history for a run with these settings (a dict) and facts about it."""
    return {
        **settings, **facts, 'status': 'running',
        'train': {'step': [], 'accuracy': [], 'loss': [], 'lr': [], 'time': []},
        'test': {'step': [], 'epoch': [], 'accuracy': [], 'loss': [], 'time': [],
                 'weights': [], 'biases': []},
    }


def record(table, **values):
    """Appends one value to each of the table's lists; a NaN (not JSON) becomes null."""
    for key, value in values.items():
        table[key].append(None if isinstance(value, float) and math.isnan(value) else value)


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
    files.write_json(history_path(workdir), summarize(history))


def read_history(workdir):
    """The history of the run in `workdir`; WorkdirError when there is none to read."""
    try:
        with open(history_path(workdir)) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise WorkdirError(f'{workdir} holds no readable training run ({history_path(workdir)}: '
                           f'{getattr(e, "strerror", None) or e})') from None


def finished(workdir):
    """The history of the run in `workdir` if it finished, else None."""
    if not os.path.exists(history_path(workdir)):
        return None
    history = read_history(workdir)
    return history if history.get('status') == 'finished' else None


def history_before(history, step):
    """The history as it was before `step`: what a checkpoint at `step` holds."""
    kept = dict(history)
    for split in ('train', 'test'):
        count = sum(1 for s in history[split]['step'] if s < step)
        kept[split] = {key: values[:count] for key, values in history[split].items()}
    return kept


def new_dir(name):
    """A path runs/<name>-<date>-<time> that does not exist yet: where a program writes
    when the user names no directory (never into the committed results/)."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    path, suffix = os.path.join(RUNS, f'{name}-{stamp}'), 1
    while os.path.exists(path):  # two started within a second
        suffix += 1
        path = os.path.join(RUNS, f'{name}-{stamp}-{suffix}')
    return path


def make_new_dir(path, name):
    """Makes the directory a tool writes its results into: `path`, or runs/<name>-<date>-
    <time> when None. One that exists is refused, never written into or emptied:
    whatever is there, committed or not, stays."""
    path = path or new_dir(name)
    if os.path.exists(path):
        raise WorkdirError(f'{path} already exists; choose another --workdir (or delete it)')
    os.makedirs(path)
    return path


def prepare_workdir(workdir, model):
    """Creates the run's directory; refuses one that already holds a run.

    Without a workdir: runs/<model>-<date>-<time>, and runs/latest points to it."""
    default = workdir is None
    if default:
        workdir = new_dir(model)
    if os.path.exists(history_path(workdir)):
        raise WorkdirError(f'{workdir} already holds a run ({HISTORY}); choose another '
                           '--workdir or delete that one')
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, '.writable')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(f'cannot write into the workdir {workdir}: {e.strerror}') from None
    if default:
        _point_latest_to(workdir)
    return workdir


def _point_latest_to(workdir):
    """runs/latest -> the run just started (replaced atomically; best effort)."""
    link = os.path.join(os.path.dirname(workdir), LATEST)
    tmp = f'{link}.{os.getpid()}'
    try:
        os.symlink(os.path.basename(workdir), tmp)
        os.replace(tmp, link)
    except OSError:  # no symlinks here (some filesystems): the log names the workdir anyway
        if os.path.lexists(tmp):
            os.remove(tmp)
