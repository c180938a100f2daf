"""The dashboard and the TensorBoard events: grids, bands, files, from a past run."""

import glob
import io
import os
import signal
import subprocess
import sys
import time

from conftest import require_tool
from conftest import run_module
from conftest import synthetic_mnist
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from graph_mnist import dashboard
from graph_mnist import runs
from graph_mnist import training


def test_image_grid_puts_misrecognised_digits_first_on_red_with_both_labels():
    images = np.zeros((5, 28, 28), np.float32)
    images[:, 14:20, 10:18] = 1.0  # a white stroke, as MNIST digits are
    correct = np.array([0, 1, 2, 3, 4])
    predicted = np.array([0, 7, 2, 8, 4])  # images 1 and 3 misrecognised
    grid, order = dashboard.image_grid(images, correct, predicted, columns=5)
    assert grid.shape == (28, 5 * 28, 3)
    assert order.tolist() == [1, 3, 0, 2, 4]
    tiles = [grid[:, 28 * i:28 * (i + 1)] for i in range(5)]
    for i, tile in enumerate(tiles):
        paper = tile[27, 27]  # a corner far from stamps and strokes
        np.testing.assert_allclose(paper, dashboard.RED if i < 2 else dashboard.WHITE)
        np.testing.assert_allclose(tile[16, 12], dashboard.INK)  # the stroke, in dark ink
    # the correct digit stamped top left (blue), the recognised one top right (black)
    for tile, right_answer, answer in ((tiles[0], 1, 7), (tiles[1], 3, 8)):
        left = np.kron(dashboard.FONT[right_answer], np.ones((2, 2), bool))
        right = np.kron(dashboard.FONT[answer], np.ones((2, 2), bool))
        np.testing.assert_allclose(tile[1:11, 1:7][left], [dashboard.CORRECT_INK] * left.sum())
        np.testing.assert_allclose(tile[1:11, 21:27][right], [dashboard.INK] * right.sum())
        assert (tile[1:11, 1:7][~left] != dashboard.CORRECT_INK).any(axis=-1).all()
    # a recognised digit carries no stamp
    assert not np.all(tiles[2] == dashboard.CORRECT_INK, axis=-1).any()


def test_image_grid_limit_and_padding():
    images = np.zeros((23, 28, 28, 1), np.float32)
    digits = np.arange(23) % 10
    grid, order = dashboard.image_grid(images, digits, digits, columns=10, limit=15)
    assert grid.shape == (2 * 28, 10 * 28, 3) and len(order) == 15
    np.testing.assert_allclose(grid[28:, 5 * 28:], 1.0)  # empty places stay white


def test_percentile_bands_on_known_data():
    values = [np.arange(0, 50, dtype=float), np.arange(50, 101, dtype=float).reshape(3, 17)]
    assert dashboard.percentile_bands(values) == [float(p) for p in dashboard.PERCENTILES]
    assert len(dashboard.PERCENTILES) - 1 == 7  # seven buckets, as in the talk


@pytest.fixture(scope='module')
def saved_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('run'))
    config = training.Config('conv_dropout', iterations=60, eval_every=10, log_every=10,
                             vis='save')
    history = training.train(synthetic_mnist(n_test=300), config,
                          workdir=workdir)
    return workdir, history


def test_vis_save_writes_a_readable_png_and_gif(saved_run):
    workdir, history = saved_run
    png = Image.open(os.path.join(workdir, 'dashboard.png'))
    assert png.size == (dashboard.TALL_WIDTH, dashboard.TALL_HEIGHT)  # the digits readable
    gif = Image.open(os.path.join(workdir, 'dashboard.gif'))
    assert gif.n_frames == 7  # evaluations at 0, 10, ..., 60
    assert os.path.join(workdir, 'dashboard.gif') in history['dashboard']
    # the bands of every evaluation are in the history, for a later redraw
    assert len(history['test']['weights']) == 7
    assert all(len(edges) == 8 and edges == sorted(edges) for edges in history['test']['biases'])


def read_events(workdir):
    tags, graphs = {}, 0
    for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            graphs += bool(event.graph_def)
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(value.WhichOneof('value'))
    return tags, graphs


def test_event_files_hold_scalars_histograms_images_and_the_graph(saved_run):
    tags, graphs = read_events(saved_run[0])
    for scalar in ('accuracy/train', 'accuracy/test', 'cross_entropy/train',
                   'cross_entropy/test', 'learning_rate'):
        assert tags[scalar] == {'simple_value'}, scalar
    for variable in ('weights/W1', 'weights/W5', 'biases/B4'):
        assert tags[variable] == {'histo'}
    assert tags['misrecognised_test_digits'] == {'image'}
    assert graphs == 1
    # and TensorBoard's own loader sees them so
    from tensorboard.backend.event_processing import event_accumulator
    loaded = event_accumulator.EventAccumulator(saved_run[0])
    loaded.Reload()
    seen = loaded.Tags()
    assert len(seen['scalars']) == 5 and len(seen['histograms']) == 10
    assert seen['images'] == ['misrecognised_test_digits'] and seen['graph']


def test_histogram_and_image_summaries_hold_the_data():
    from graph_mnist import events
    values = np.array([[0.0, 1.0], [2.0, 3.0]])
    h = events.histogram(values, buckets=3)
    assert (h.min, h.max, h.num, h.sum, h.sum_squares) == (0, 3, 4, 6, 14)
    assert list(h.bucket) == [1, 1, 2] and list(h.bucket_limit) == [1, 2, 3]
    image = events.png(np.ones((28, 56, 3)))
    assert (image.height, image.width, image.colorspace) == (28, 56, 3)
    decoded = Image.open(io.BytesIO(image.encoded_image_string))
    assert decoded.size == (56, 28) and decoded.getpixel((5, 5)) == (255, 255, 255)


def test_vis_none_draws_nothing_but_keeps_tensorboard(tmp_path):
    config = training.Config('softmax', iterations=20, eval_every=10, vis='none')
    training.train(synthetic_mnist(), config, workdir=str(tmp_path))
    assert not glob.glob(str(tmp_path / 'dashboard.*'))
    assert 'accuracy/test' in read_events(str(tmp_path))[0]


def test_redraw_from_a_finished_run(saved_run, tmp_path):
    workdir, history = saved_run
    figure = dashboard.draw_history(history)
    assert len(figure.axes) == 6
    result = run_module('graph_mnist.dashboard', f'--workdir={workdir}',
                        f'--output={tmp_path / "h.png"}')
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / 'h.png').size[0] > 600
    missing = run_module('graph_mnist.dashboard', f'--workdir={tmp_path / "nothing"}')
    assert missing.returncode == 1 and 'no readable training run' in missing.stderr
    assert 'Traceback' not in missing.stderr


def test_vis_live_without_display_is_a_clear_message(tmp_path, mnist_dir):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
    result = run_module('graph_mnist.train', '--model=softmax', '--vis=live',
                        '--iterations=10', f'--data_dir={mnist_dir}',
                        f'--workdir={tmp_path / "run"}', base_env=environment)
    assert result.returncode == 1
    assert '--vis=live needs a display' in result.stderr
    assert 'Traceback' not in result.stderr


def test_vis_live_draws_in_a_window_and_waits_for_it(tmp_path, mnist_dir):
    """On a virtual X display: the run finishes, says so, keeps its window open, and
    Ctrl-C then ends the process cleanly."""
    require_tool('Xvfb', 'xvfb')
    display = f':{50 + os.getpid() % 40}'
    xvfb = subprocess.Popen(['Xvfb', display, '-screen', '0', '1280x800x24'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        workdir = tmp_path / 'run'
        process = subprocess.Popen(
            [sys.executable, '-m', 'graph_mnist.train', '--model=softmax', '--vis=live',
             '--iterations=200', f'--data_dir={mnist_dir}', f'--workdir={workdir}'],
            env=dict(os.environ, DISPLAY=display, MPLBACKEND='TkAgg'),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if runs.read_history(str(workdir))['status'] == 'finished':
                    break
            except runs.WorkdirError:
                pass
            time.sleep(0.2)
        time.sleep(1)
        assert process.poll() is None  # still showing the window
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert 'close its window (or Ctrl-C) to exit' in stderr
        assert 'Traceback' not in stderr
    finally:
        xvfb.terminate()
        xvfb.wait()


def test_vis_notebook_outside_a_kernel_is_a_clear_message(tmp_path, mnist_dir):
    result = run_module('graph_mnist.train', '--model=softmax', '--iterations=5',
                        '--vis=notebook', f'--workdir={tmp_path / "run"}',
                        f'--data_dir={mnist_dir}')
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert 'this is not a Jupyter kernel; use --vis=save' in result.stderr


def test_the_notebook_output_shows_one_image_replaced_in_place_within_its_budget(
        tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, 'in_notebook', lambda: True)
    shown = []

    class Handle:
        def update(self, frame):
            shown.append(('update', frame))

    class Display:  # IPython.display's two calls the output makes
        Image = staticmethod(lambda data, format: data)

        @staticmethod
        def display(frame, display_id):
            shown.append(('display', frame))
            return Handle()

    board = dashboard.Dashboard('notebook', str(tmp_path), 'softmax', evaluations=50)
    board.output.display = Display
    images, digits = np.zeros((100, 28, 28, 1), np.float32), np.arange(100) % 10
    history = runs.new_history({'model': 'softmax', 'seed': 0})
    for _ in range(49):  # no training between them: the budget allows the first frame only
        board.evaluation(history, images, digits, digits)
    board.evaluation(history, images, digits, digits, final=True)  # the end: always drawn
    assert [kind for kind, _ in shown] == ['display', 'update']
    assert all(frame.startswith(b'\x89PNG') for _, frame in shown)
    assert board.close() == [str(tmp_path / 'dashboard.png')]
    assert Image.open(tmp_path / 'dashboard.png').size == (dashboard.TALL_WIDTH,
                                                          dashboard.TALL_HEIGHT)


def test_the_saved_png_shows_each_test_digit_at_its_own_size(tmp_path):
    # The GIF's frames are 840 pixels wide, a test digit 6 of them; the PNG, read after the
    # run, draws the last frame tall: a misrecognised digit's red tile 28 x 28 pixels.
    board = dashboard.Dashboard('save', str(tmp_path), 'softmax', evaluations=1)
    images, correct = np.zeros((1000, 28, 28, 1), np.float32), np.arange(1000) % 10
    predicted = correct.copy()
    predicted[0] = 3  # one misrecognised: the first tile, on red
    board.evaluation(runs.new_history({'model': 'softmax', 'seed': 0}), images, correct,
                     predicted, final=True)
    board.close()
    pixels = np.asarray(Image.open(tmp_path / 'dashboard.png').convert('RGB')).astype(int)
    red = (np.abs(pixels - 255 * dashboard.RED) <= 6).all(-1)  # the tile's paper
    rows, columns = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    assert 26 <= np.ptp(rows) + 1 <= 30 and 26 <= np.ptp(columns) + 1 <= 30
    assert board.output.frames[0].shape[:2] == (504, 840)  # the animation stays wide


def test_the_files_output_keeps_at_most_its_frames_evenly_spread(tmp_path):
    board = dashboard.Dashboard('save', str(tmp_path), 'softmax', evaluations=21, max_frames=5)
    images, digits = np.zeros((100, 28, 28, 1), np.float32), np.arange(100) % 10
    history = runs.new_history({'model': 'softmax', 'seed': 0})
    for i in range(21):
        board.evaluation(history, images, digits, digits, final=i == 20)
    assert len(board.output.frames) == 5  # evaluations 0, 5, 10, 15 and 20 (the last)
    written = board.close()
    assert [os.path.basename(p) for p in written][:2] == ['dashboard.png', 'dashboard.gif']
