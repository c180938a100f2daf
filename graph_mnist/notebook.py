"""The talk in a Jupyter notebook: train with the dashboard in the cell, stop with the
kernel's stop button.

    from graph_mnist import notebook
    history = notebook.run('conv_dropout', iterations=10000)

`run` is `training.train` with what a notebook needs around it: MNIST loaded once per
kernel, the dashboard drawn in the cell's output (`vis='notebook'`), a run directory of
its own under runs/ (history.json, checkpoints, TensorBoard events), and the kernel's
interrupt (the stop button, or "Interrupt kernel") turned into a clean stop: a
checkpoint, the history marked `interrupted`, the Session closed, a message instead of
a traceback; the next cell can train again.
"""

import contextlib
import signal
import threading

from graph_mnist import data
from graph_mnist import runs
from graph_mnist import training

_MNIST = {}


def mnist(data_dir=None):
    """MNIST, loaded (and fetched, the first time) once per kernel."""
    if data_dir not in _MNIST:
        _MNIST[data_dir] = data.load(data_dir)
    return _MNIST[data_dir]


@contextlib.contextmanager
def stop_button():
    """While training: the kernel's interrupt (SIGINT) asks the loop to stop at the next
    step instead of raising KeyboardInterrupt in the middle of a Session.run."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set  # signals reach the main thread only: no stop button here
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: requested.set())
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def run(model, iterations=None, workdir=None, data_dir=None, vis='notebook', **settings):
    """Trains `model` (see training.Config for the other settings: seed, batch_size, loss,
    eval_every, log_every, checkpoint_every) and returns its history. Stopped with the
    kernel's interrupt, returns the history so far (status 'interrupted'). The history
    returned also names the run's `workdir`."""
    config = training.Config(model, iterations=iterations, vis=vis, **settings)
    images = mnist(data_dir)
    workdir = runs.prepare_workdir(workdir, model)
    with stop_button() as stop_requested:
        try:
            history = training.train(images, config, workdir, stop_requested=stop_requested)
        except training.Interrupted as e:
            print(f'{model}: {e}; the history so far is in {runs.history_path(workdir)}')
            return dict(runs.read_history(workdir), workdir=workdir)
    print(training.summary_line(history))
    return dict(history, workdir=workdir)  # where its checkpoints are (graph_mnist.pictures)


def curves(lines, title, ylabel, xlim=None, ylim=None):
    """One small plot of several runs' curves, for the point a step of the talk makes.
    lines: (label, history, 'train' or 'test', 'accuracy' or 'loss'). Returns a PNG
    picture, which a notebook shows as the cell's value."""
    import io

    from IPython.display import Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(8, 3.2), dpi=80)
    ax = figure.add_subplot()
    for label, history, table, key in lines:
        ax.plot(history[table]['step'], history[table][key], lw=1.2, label=label)
    ax.set(title=title, xlabel='training step', ylabel=ylabel)
    if xlim:
        ax.set_xlim(*xlim)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    png = io.BytesIO()
    FigureCanvasAgg(figure).print_png(png)
    return Image(data=png.getvalue(), format='png')
