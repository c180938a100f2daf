"""The talk's animated dashboard: six panels, on screen, in files, or from a past run.

    +-------------------+-------------------+-------------------+
    | training digits   | accuracy          | cross-entropy     |
    | (the batch of 100)| train and test    | train and test    |
    +-------------------+-------------------+-------------------+
    | weights: spread   | biases: spread    | test digits       |
    | (percentile bands)| (percentile bands)| (1,000)           |
    +-------------------+-------------------+-------------------+

Misrecognised digits come first, on a red background, with the correct digit (blue,
top left) and the recognised one (black, top right) stamped on them. The dashboard is
fed values (numpy arrays, the metrics history); it drives nothing and knows no
TensorFlow.

    graph-mnist-dashboard --workdir=<workdir>    # redraw a finished run's curves as PNG

`graph-mnist-dashboard` is `python -m graph_mnist.dashboard`: the same program.
"""

import math
import os
import sys
import time

import numpy as np

from graph_mnist import animation
from graph_mnist import runs
from graph_mnist.errors import UserError

# 7 buckets between these percentiles, as the talk's weight and bias panels.
PERCENTILES = (0, 5, 15, 30, 70, 85, 95, 100)

# 3x5 bitmap digits, one string of 15 pixels a digit, row by row.
_GLYPHS = [
    '111101101101111', '010110010010111', '111001111100111', '111001111001111',
    '101101111001001', '111100111001111', '111100111101111', '111001010010010',
    '111101111101111', '111101111001111',
]
FONT = np.array([[c == '1' for c in g] for g in _GLYPHS]).reshape(10, 5, 3)

WHITE, RED = np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.55, 0.55])
INK, CORRECT_INK = np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.1, 0.9])


# --------------------------------------------------------------------------- numbers


def image_grid(images, correct, predicted, columns=10, limit=None):
    """One RGB picture of digits, misrecognised first, as the talk showed them.

    images [N, 28, 28(, 1)] in [0, 1] (white digit on black, as MNIST); correct and
    predicted [N] digits. Returns (grid [rows*28, columns*28, 3] in [0, 1], order): dark
    digits on white paper, misrecognised ones on red with the correct digit stamped top
    left and the predicted one top right; `order` is the index of each tile's image.
    """
    images = np.asarray(images, np.float32).reshape(-1, 28, 28)
    correct, predicted = np.asarray(correct), np.asarray(predicted)
    wrong = correct != predicted
    order = np.argsort(~wrong, kind='stable')[:limit]  # misrecognised first, else in order
    ink = images[order][..., None]  # [n, 28, 28, 1]
    paper = np.where(wrong[order][:, None, None, None], RED, WHITE)
    tiles = paper * (1 - ink) + INK * ink
    for i in np.flatnonzero(wrong[order]):
        _stamp(tiles[i], correct[order[i]], CORRECT_INK, left=True)
        _stamp(tiles[i], predicted[order[i]], INK, left=False)
    rows = math.ceil(len(order) / columns)
    grid = np.ones((rows * columns, 28, 28, 3), np.float32)
    grid[:len(order)] = tiles
    grid = grid.reshape(rows, columns, 28, 28, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * 28, columns * 28, 3), order


def _stamp(tile, digit, colour, left):
    """Draws `digit` at twice the 3x5 font size in a top corner of a 28x28 tile."""
    mask = np.kron(FONT[int(digit)], np.ones((2, 2), bool))  # 10 x 6
    col = 1 if left else 28 - 1 - 6
    tile[1:11, col:col + 6][mask] = colour


def percentile_bands(values, percentiles=PERCENTILES):
    """The edges of the percentile buckets of all `values` (any shapes, flattened)."""
    flat = np.concatenate([np.ravel(v) for v in values])
    return np.percentile(flat, percentiles).tolist()


# --------------------------------------------------------------------------- the figure


TEST_COLUMNS = {'wide': 40, 'tall': 35}  # the 1,000 test digits: 25 or 29 rows

# The tall layout, in pixels (figure 1,060 wide): the test digits at their own size,
# one screen pixel per MNIST pixel, 980 x 812, below the curves and the spreads.
TALL_WIDTH, TALL_HEIGHT = 1060, 1500
TALL_AXES = {  # left, bottom, width, height
    'train': (20, 1130, 300, 300), 'acc': (400, 1150, 290, 270), 'loss': (750, 1150, 290, 270),
    'w': (75, 880, 420, 200), 'b': (600, 880, 420, 200), 'test': (40, 10, 980, 812),
}


class Figure:
    """The six panels in one matplotlib figure, redrawn from the history and two grids.

    layout 'wide': 2 x 3 panels, 840 x 504 pixels (window, PNG, GIF). 'tall': for a
    notebook cell, 1,060 x 1,500 pixels: the curves and spreads on top, the 1,000 test
    digits below at their own size (28 x 28 screen pixels each), so that the digits
    stamped on the misrecognised ones can be read.
    """

    def __init__(self, title='', pyplot=None, layout='wide'):
        self.plt = pyplot  # None: an off-screen figure, no global matplotlib state touched
        self.layout, self.dpi = layout, 70 if layout == 'wide' else 100
        size = (12, 7.2) if layout == 'wide' else (TALL_WIDTH / 100, TALL_HEIGHT / 100)
        if pyplot is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure as MatplotlibFigure
            self.figure = MatplotlibFigure(figsize=size, dpi=self.dpi)
            FigureCanvasAgg(self.figure)
        else:
            self.figure = pyplot.figure(figsize=size, dpi=self.dpi)
        self.figure.suptitle(title)
        if layout == 'wide':
            (self.train_ax, self.acc_ax, self.loss_ax), (self.w_ax, self.b_ax, self.test_ax) = \
                self.figure.subplots(2, 3)
        else:
            self.train_ax, self.acc_ax, self.loss_ax, self.w_ax, self.b_ax, self.test_ax = (
                self.figure.add_axes((left / TALL_WIDTH, bottom / TALL_HEIGHT,
                                      width / TALL_WIDTH, height / TALL_HEIGHT))
                for left, bottom, width, height in TALL_AXES.values())
        columns = TEST_COLUMNS[layout]
        for ax, name in ((self.train_ax, 'training digits'), (self.test_ax, 'test digits')):
            ax.set_title(name, fontsize=10)
            ax.set_axis_off()
        self.train_image = self.train_ax.imshow(np.ones((280, 280, 3)), interpolation='nearest')
        self.test_image = self.test_ax.imshow(np.ones((28000 // columns, 28 * columns, 3)),
                                              interpolation='nearest')
        self.lines = {}
        for ax, key, name in ((self.acc_ax, 'accuracy', 'accuracy'),
                              (self.loss_ax, 'loss', 'cross-entropy')):
            ax.set_title(name, fontsize=10)
            ax.grid(alpha=0.3)
            self.lines['train', key], = ax.plot([], [], lw=0.8, color='tab:blue',
                                                label='training batch')
            self.lines['test', key], = ax.plot([], [], lw=1.5, color='tab:red',
                                               label='test set')
            ax.legend(loc='lower right' if key == 'accuracy' else 'upper right', fontsize=8)
        self.acc_ax.set_ylim(0.8, 1.0)
        self.band_axes = {'weights': self.w_ax, 'biases': self.b_ax}
        for name, ax in self.band_axes.items():
            ax.set_title(f'{name}: spread (percentiles)', fontsize=10)
            ax.grid(alpha=0.3)
        if layout == 'wide':
            self.figure.tight_layout()

    def draw(self, history, train_grid=None, test_grid=None):
        train, test = history['train'], history['test']
        for split, table in (('train', train), ('test', test)):
            for key in ('accuracy', 'loss'):
                values = np.array(table[key], dtype=float)  # null (NaN) -> nan: a gap
                self.lines[split, key].set_data(table['step'], values)
        last = max(train['step'][-1:] + test['step'][-1:] + [1])
        for ax in (self.acc_ax, self.loss_ax):
            ax.set_xlim(0, last)
        test_losses = [v for v in test['loss'] if v is not None]
        if test_losses:
            self.loss_ax.set_ylim(0, max(test_losses[min(1, len(test_losses) - 1):]) * 1.3)
        accuracies = [v for v in test['accuracy'] if v is not None]
        if accuracies:
            self.acc_ax.set_ylim(min(0.9, min(accuracies[len(accuracies) // 10:])) - 0.005, 1.0)
        for name, ax in self.band_axes.items():
            self._bands(ax, test['step'], test.get(name, []))
        if train_grid is not None:
            self.train_image.set_data(train_grid)
        if test_grid is not None:
            self.test_image.set_data(test_grid)
        return self.figure

    @staticmethod
    def _bands(ax, steps, bands):
        for artist in list(ax.collections):
            artist.remove()
        if not bands:
            return
        edges = np.array(bands).T  # [edge, time]
        steps = steps[:edges.shape[1]]
        shades = [0.25, 0.45, 0.7, 1.0, 0.7, 0.45, 0.25]
        for i, alpha in enumerate(shades):
            ax.fill_between(steps, edges[i], edges[i + 1], color='tab:blue', alpha=alpha,
                            lw=0)
        ax.set_xlim(0, max(steps[-1], 1))
        ax.set_ylim(edges.min() - 0.01, edges.max() + 0.01)

    def rgb(self):
        """The figure as an RGB uint8 array (one animation frame)."""
        self.figure.canvas.draw()
        return np.asarray(self.figure.canvas.buffer_rgba())[..., :3].copy()

    def png(self, colours=64):
        """The figure as PNG bytes (a notebook frame), in a palette of `colours`: a third
        of the size of the full-colour PNG, so that a notebook with a dashboard per
        training cell stays small enough to commit and to open on a repository page."""
        import io

        from PIL import Image
        buffer = io.BytesIO()
        Image.fromarray(self.rgb()).quantize(colors=colours).save(buffer, format='png')
        return buffer.getvalue()

    def save_png(self, path):
        self.figure.savefig(path, dpi=self.dpi)

    def close(self):
        if self.plt:
            self.plt.close(self.figure)


# --------------------------------------------------------------------------- where it shows


def display_available():
    """True where a window can open: a desktop OS, or X11/Wayland on Linux."""
    if sys.platform in ('darwin', 'win32'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


class DashboardError(UserError):
    """The dashboard cannot show where it was asked to."""


def in_notebook():
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab)."""
    ipython = sys.modules.get('IPython')
    shell = ipython.get_ipython() if ipython else None
    return shell is not None and hasattr(shell, 'kernel')


def choose(vis):
    """'auto' made concrete: notebook in a Jupyter kernel, else live where a display is,
    else save. Other modes stay as they are."""
    if vis != 'auto':
        return vis
    if in_notebook():
        return 'notebook'
    return 'live' if display_available() else 'save'


class Window:
    """--vis=live: a matplotlib window, redrawn at every frame; it stays open at the end
    (see wait_for_windows)."""

    layout = png_layout = 'wide'

    def __init__(self, workdir):
        if not display_available():
            raise DashboardError('--vis=live needs a display and none is available '
                                 '(DISPLAY is not set); use --vis=save to write the '
                                 'dashboard as PNG and GIF into the workdir')
        import matplotlib
        from matplotlib import pyplot
        if matplotlib.get_backend().lower() == 'agg':
            raise DashboardError('--vis=live: matplotlib found no window backend '
                                 '(install tkinter or PyQt); use --vis=save')
        pyplot.ion()
        self.pyplot = pyplot

    def due(self, evaluation, every):  # evenly spread: every `every`-th evaluation
        return evaluation % every == 0

    def show(self, figure):
        self.pyplot.pause(0.001)

    def close(self, figure, png):
        self.pyplot.ioff()
        return []


class Files:
    """--vis=save: frames kept in memory (every `every`-th evaluation), then PNG, GIF and
    MP4 (with ffmpeg) written into the workdir at the end."""

    layout, png_layout, pyplot, due = 'wide', 'tall', None, Window.due

    def __init__(self, workdir):
        self.workdir, self.frames = workdir, []

    def show(self, figure):
        self.frames.append(figure.rgb())

    def close(self, figure, png):  # off-screen figures: nothing to close
        if not self.frames:
            return []
        path = os.path.join(self.workdir, 'dashboard.png')
        png.save_png(path)
        written = [path, animation.gif(self.frames, os.path.join(self.workdir, 'dashboard.gif'))]
        mp4 = animation.mp4(self.frames, os.path.join(self.workdir, 'dashboard.mp4'))
        return written + ([mp4] if mp4 else [])


class NotebookCell:
    """--vis=notebook: one image in the cell's output, replaced in place (the notebook
    display protocol's display_id: no widget extension, so any front end shows it), redrawn
    as often as a budget of BUDGET of the elapsed time allows, the first at once; its last
    frame also written as dashboard.png into the workdir."""

    layout = png_layout = 'tall'
    pyplot = None
    BUDGET = 0.06  # at most this share of the training time goes to drawing

    def __init__(self, workdir):
        if not in_notebook():
            raise DashboardError('--vis=notebook draws in a Jupyter notebook\'s cell and '
                                 'this is not a Jupyter kernel; use --vis=save (or auto)')
        from IPython import display
        self.display, self.handle, self.workdir = display, None, workdir
        self.started = self.asked = time.perf_counter()
        self.drawing, self.last_cost = 0.0, 0.0  # seconds spent drawing: all, the last frame

    def due(self, evaluation, every):
        self.asked = time.perf_counter()  # a frame's cost counts from here to its show
        return self.drawing + self.last_cost <= self.BUDGET * (self.asked - self.started)

    def show(self, figure):
        frame = self.display.Image(data=figure.png(), format='png')
        if self.handle is None:
            self.handle = self.display.display(frame, display_id=True)
        else:
            self.handle.update(frame)
        self.last_cost = time.perf_counter() - self.asked
        self.drawing += self.last_cost

    def close(self, figure, png):  # an off-screen figure: nothing to close
        if not (self.workdir and self.handle):
            return []
        path = os.path.join(self.workdir, 'dashboard.png')
        png.save_png(path)
        return [path]


OUTPUTS = {'live': Window, 'save': Files, 'notebook': NotebookCell}
MODES = (*OUTPUTS, 'none')


class Dashboard:
    """The dashboard of one training run: the figure, drawn at the test evaluations its
    output asks for (at most `max_frames` evenly spread, or a time budget in a notebook),
    and always at the end, then shown by one of OUTPUTS."""

    def __init__(self, mode, workdir, title, evaluations, max_frames=60):
        self.output, self.title = OUTPUTS[mode](workdir), title
        self.figure = Figure(title, self.output.pyplot, layout=self.output.layout)
        self.every = max(1, math.ceil(evaluations / max_frames))
        self.evaluations = 0
        self.batch = None  # the latest training batch: (images, correct, predicted)
        self.last = None  # what the last frame drew: (history, test digits, batch)

    def training_batch(self, images, correct, predicted):
        self.batch = images, correct, predicted  # drawn only when a frame is made

    def evaluation(self, history, test_images, correct, predicted, final=False):
        """Called at every test evaluation; draws when this one makes a frame."""
        self.evaluations += 1
        if not (self.output.due(self.evaluations - 1, self.every) or final):
            return
        self.last = history, (test_images, correct, predicted), self.batch
        self.draw(self.figure, *self.last)
        self.output.show(self.figure)

    @staticmethod
    def draw(figure, history, test_digits, batch):
        test_grid, _ = image_grid(*test_digits, columns=TEST_COLUMNS[figure.layout], limit=1000)
        train_grid = image_grid(*batch, columns=10)[0] if batch else None
        figure.draw(history, train_grid, test_grid)

    def close(self):
        """The paths of the files written (save and notebook outputs). Their PNG is the
        last frame in the tall layout, where the test digits can be read: in the wide one
        a digit is 6 pixels wide."""
        png = self.figure
        if self.last and png.layout != self.output.png_layout:
            png = Figure(self.title, layout=self.output.png_layout)
            self.draw(png, *self.last)
        return self.output.close(self.figure, png)


def wait_for_windows():
    """Live mode, at the very end: keeps the dashboard on screen until its window is
    closed (or Ctrl-C). Returns at once when no window is open."""
    from matplotlib import pyplot
    if pyplot.get_fignums():
        try:
            pyplot.show()
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------- a past run


def draw_history(history, path=None):
    """The curve and spread panels of a finished run, from its history; returns the figure."""
    figure = Figure(f"{history['model']} (seed {history['seed']}): "
                    f"final test accuracy {history.get('final_test_accuracy', float('nan')):.4f}")
    for ax in (figure.train_ax, figure.test_ax):
        ax.set_title(ax.get_title() + ' (not kept in the history)', fontsize=9)
    figure.draw(history)
    if path:
        figure.save_png(path)
    return figure.figure


def main(argv):
    del argv
    history = runs.read_history(FLAGS.workdir)
    output = FLAGS.output or os.path.join(FLAGS.workdir, 'history.png')
    draw_history(history, output)
    print(output)
    return 0


if __name__ == '__main__':
    from absl import flags

    from graph_mnist import cli

    FLAGS = flags.FLAGS

    def define_flags():
        flags.DEFINE_string('workdir', None, 'A run directory holding history.json.')
        flags.DEFINE_string('output', None, 'PNG to write (default <workdir>/history.png).')
        flags.mark_flag_as_required('workdir')

    cli.run(main, define_flags)
