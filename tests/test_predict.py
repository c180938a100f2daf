"""predict: MNIST-like preprocessing of any picture, bad files, the whole command."""

import glob
import io
import os

from conftest import run_module
from conftest import synthetic_mnist
import numpy as np
from PIL import Image
from PIL import ImageDraw
import pytest
import tensorflow as tf

from graph_mnist import export
from graph_mnist import predict
from graph_mnist import preprocess
from graph_mnist import training

v1 = tf.compat.v1

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), 'fixtures', 'digits',
                                         '*.png')))


def centre_of_mass(image):
    image = image[..., 0]
    return (np.indices(image.shape) * image).reshape(2, -1).sum(1) / image.sum()


def bounding_box(image):
    rows, cols = np.flatnonzero(image[..., 0].any(1)), np.flatnonzero(image[..., 0].any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.fixture(scope='module')
def prepare():
    """The exported graph's preparation (preprocess.mnist_like_batch) on encoded files."""
    graph = tf.Graph()
    with graph.as_default():
        files = v1.placeholder(tf.string, [None])
        prepared = preprocess.mnist_like_batch(files)
    sess = v1.Session(graph=graph)

    def run(*contents):
        try:
            return sess.run(prepared, {files: list(contents)})
        except tf.errors.InvalidArgumentError as e:
            raise predict.ImageError(preprocess.reason(e)) from None
    yield run
    sess.close()


def encode(image, kind='PNG', mode='L'):
    """A PIL image, or float pixels in [0, 1], as the bytes of a file."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8), mode)
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def test_dark_ink_on_light_paper_is_inverted(prepare):
    paper = np.full((60, 40), 0.9, np.float32)
    paper[10:50, 18:22] = 0.1  # a dark vertical bar: a "1"
    out, = prepare(encode(paper))
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    assert out[0, 0, 0] == 0 and out.max() == pytest.approx(1.0, abs=0.02)  # light on black
    assert bounding_box(out)[0] == 20  # the tall side scaled to 20


def test_off_centre_digit_is_centred_by_its_centre_of_mass(prepare):
    image = np.zeros((300, 300), np.float32)
    image[10:60, 230:290] = 1.0  # a light blob in a corner, on black already
    out, = prepare(encode(image, 'JPEG'))
    np.testing.assert_allclose(centre_of_mass(out), [14, 14], atol=0.6)
    assert max(bounding_box(out)) == 20


def test_large_picture_lopsided_digit_and_transparent_paper(prepare):
    image = Image.new('L', (2400, 1800), 255)
    ImageDraw.Draw(image).ellipse((300, 200, 700, 1500), outline=0, width=60)  # a tall "0"
    drawn = Image.new('RGBA', (2400, 1800), (0, 0, 0, 0))  # the same on transparent paper
    ImageDraw.Draw(drawn).ellipse((300, 200, 700, 1500), outline=(0, 0, 0, 255), width=60)
    for out in prepare(encode(image), encode(drawn)):
        height, width = bounding_box(out)
        assert height == 20 and 5 <= width < 20  # proportions kept
        np.testing.assert_allclose(centre_of_mass(out), [14, 14], atol=0.6)


@pytest.mark.parametrize('path', FIXTURES, ids=os.path.basename)
def test_fixtures_come_out_as_mnist_digits(prepare, path):
    out, = prepare(predict.read_file(path))
    assert max(bounding_box(out)) == 20
    np.testing.assert_allclose(centre_of_mass(out), [14, 14], atol=1.0)


def test_pictures_that_are_refused_and_why(prepare):
    bomb = bytearray(encode(np.zeros((10, 10))))
    bomb[16:24] = (60_000).to_bytes(4, 'big') * 2  # the header claims 60,000 x 60,000
    cases = [(encode(np.full((50, 50), 0.8)), 'no digit found: the picture is blank'),
             (b'not a picture', 'not a PNG or JPEG image'),
             (encode(Image.new('L', (20, 20)), 'GIF'), 'not a PNG or JPEG image'),
             (bytes(bomb), 'more than 25,000,000 pixels'),
             (encode(np.eye(40))[:60], 'Invalid PNG data')]  # cut short
    for data, message in cases:
        with pytest.raises(predict.ImageError, match=message):
            prepare(data)


def test_bad_files_each_get_their_message(tmp_path, monkeypatch):
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    big = tmp_path / 'big.png'
    big.write_bytes(encode(np.zeros((100, 100))))
    cases = [(empty, 'the file is empty'), (tmp_path / 'missing.png', 'cannot read it')]
    for path, message in cases:
        with pytest.raises(predict.ImageError, match=message):
            predict.read_file(str(path))
    monkeypatch.setattr(predict, 'MAX_BYTES', 10)
    with pytest.raises(predict.ImageError, match='more than'):
        predict.read_file(str(big))


@pytest.mark.slow  # trains, exports, then a process of its own
def test_predict_command_reads_good_files_despite_bad_ones(tmp_path):
    workdir, export_dir = str(tmp_path / 'run'), str(tmp_path / 'exported')
    config = training.Config('softmax', iterations=30, eval_every=30, vis='none')
    training.train(synthetic_mnist(), config, workdir=workdir)
    export.export(workdir, export_dir)
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    text = tmp_path / 'notes.png'
    text.write_text('not a picture')
    result = run_module('graph_mnist.predict', f'--export_dir={export_dir}', '--top=3',
                        str(empty), FIXTURES[0], str(text), FIXTURES[-1])
    assert result.returncode == 1  # two files failed
    assert f'{empty}: the file is empty' in result.stderr
    assert f'{text}: not a PNG or JPEG image' in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(FIXTURES[0] + ': ')
    assert lines[1].startswith(FIXTURES[-1] + ': ')
    assert len(lines[0].split('), ')) == 3  # three digits with their probabilities
    assert 'Traceback' not in result.stderr
