"""predict: MNIST-like preprocessing of any picture, bad files, the whole command."""

import glob
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import run_module
from conftest import synthetic_mnist
from graph_mnist import export
from graph_mnist import predict
from graph_mnist import train

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), 'fixtures', 'digits',
                                         '*.png')))


def centre_of_mass(image):
    image = image[..., 0]
    return (np.indices(image.shape) * image).reshape(2, -1).sum(1) / image.sum()


def bounding_box(image):
    rows, cols = np.flatnonzero(image[..., 0].any(1)), np.flatnonzero(image[..., 0].any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_dark_ink_on_light_paper_is_inverted():
    paper = np.full((60, 40), 0.9, np.float32)
    paper[10:50, 18:22] = 0.1  # a dark vertical bar: a "1"
    out = predict.mnist_like(paper)
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    assert out[0, 0, 0] == 0 and out.max() == pytest.approx(1.0, abs=0.02)  # light on black
    assert bounding_box(out)[0] == 20  # the tall side scaled to 20


def test_off_centre_digit_is_centred_by_its_centre_of_mass():
    image = np.zeros((300, 300), np.float32)
    image[10:60, 230:290] = 1.0  # a light blob in a corner, on black already
    out = predict.mnist_like(image)
    np.testing.assert_allclose(centre_of_mass(out), [14, 14], atol=0.6)
    assert max(bounding_box(out)) == 20


def test_large_picture_and_lopsided_digit():
    image = Image.new('L', (2400, 1800), 255)
    ImageDraw.Draw(image).ellipse((300, 200, 700, 1500), outline=0, width=60)  # a tall "0"
    out = predict.mnist_like(np.asarray(image, np.float32) / 255)
    height, width = bounding_box(out)
    assert height == 20 and 5 <= width < 20  # proportions kept
    np.testing.assert_allclose(centre_of_mass(out), [14, 14], atol=0.6)


def test_blank_picture_has_no_digit():
    with pytest.raises(predict.ImageError, match='blank'):
        predict.mnist_like(np.full((50, 50), 0.8, np.float32))


@pytest.mark.parametrize('path', FIXTURES, ids=os.path.basename)
def test_fixtures_come_out_as_mnist_digits(path):
    out = predict.mnist_like(predict.load_image(path))
    assert max(bounding_box(out)) == 20
    np.testing.assert_allclose(centre_of_mass(out), [14, 14], atol=1.0)


def test_bad_files_each_get_their_message(tmp_path, monkeypatch):
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    text = tmp_path / 'notes.png'
    text.write_text('not a picture')
    big = tmp_path / 'big.png'
    Image.new('L', (100, 100), 255).save(big)
    cases = [(empty, 'the file is empty'), (text, 'not a readable image'),
             (tmp_path / 'missing.png', 'cannot read it')]
    for path, message in cases:
        with pytest.raises(predict.ImageError, match=message):
            predict.load_image(str(path))
    monkeypatch.setattr(predict, 'MAX_PIXELS', 5000)
    with pytest.raises(predict.ImageError, match='too large'):
        predict.load_image(str(big))
    monkeypatch.setattr(predict, 'MAX_BYTES', 10)
    with pytest.raises(predict.ImageError, match='more than'):
        predict.load_image(str(big))


def test_predict_command_reads_good_files_despite_bad_ones(tmp_path):
    workdir, export_dir = str(tmp_path / 'run'), str(tmp_path / 'exported')
    train.train(synthetic_mnist(), train.Config('softmax', iterations=30, eval_every=30),
                workdir=workdir)
    export.export(workdir, export_dir)
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    result = run_module('graph_mnist.predict', f'--export_dir={export_dir}', '--top=3',
                        str(empty), FIXTURES[0], FIXTURES[-1])
    assert result.returncode == 1  # one file failed
    assert f'{empty}: the file is empty' in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(FIXTURES[0] + ': ')
    assert len(lines[0].split('), ')) == 3  # three digits with their probabilities
    assert 'Traceback' not in result.stderr
