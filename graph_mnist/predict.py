r"""Reads digits from image files with an exported network.

    python -m graph_mnist.predict --export_dir=exported/conv_dropout digit.png photo.jpg
    python -m graph_mnist.predict --export_dir=exported/conv_dropout --top=3 *.png

Any PNG or JPEG, any size: it is made to look like MNIST first, the way MNIST itself
was made: grayscale; dark ink on light paper is inverted to a light digit on black;
the digit is cropped to its ink, scaled to fit 20x20 keeping its proportions, and
placed in 28x28 so that its centre of mass is at the centre. One line per file:
the digit and its probability. A file that cannot be read gets its own message and
the others are still read. This loads the SavedModel; it never builds a network.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os

from absl import flags
from absl import logging
import numpy as np

from graph_mnist.errors import UserError

MAX_BYTES = 50 * 1024 * 1024  # a digit needs far less; more is a mistake, not a digit
MAX_PIXELS = 40_000_000


class ImageError(UserError):
    """This file cannot be read as a digit; the message says why."""


def load_image(path):
    """The file as grayscale float32 [H, W] in [0, 1], or ImageError."""
    from PIL import Image, UnidentifiedImageError
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ImageError(f'cannot read it: {e.strerror}') from None
    if size == 0:
        raise ImageError('the file is empty')
    if size > MAX_BYTES:
        raise ImageError(f'the file is {size / 1e6:.0f} MB, more than the '
                         f'{MAX_BYTES / 1e6:.0f} MB accepted for one digit')
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f'{image.width}x{image.height} pixels is too large '
                                 f'(at most {MAX_PIXELS / 1e6:.0f} million)')
            image.load()
            if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
                # transparent areas are paper: flatten onto white
                background = Image.new('RGBA', image.size, 'white')
                image = Image.alpha_composite(background, image.convert('RGBA'))
            gray = image.convert('L')
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageError(f'not a readable image ({type(e).__name__})') from None
    except OSError as e:
        raise ImageError(f'not a readable image ({e})') from None
    return np.asarray(gray, np.float32) / 255.0


def mnist_like(pixels):
    """Any grayscale digit -> [28, 28, 1] float32 as MNIST: white digit on black, 20x20
    box, centre of mass at the centre. Raises ImageError when there is no digit."""
    from PIL import Image
    pixels = np.asarray(pixels, np.float32)
    if np.median(pixels) > 0.5:  # most of the picture is light: dark ink on paper
        pixels = 1.0 - pixels
    pixels = pixels - np.median(pixels)  # the paper's shade becomes 0
    peak = pixels.max()
    if peak < 0.1:
        raise ImageError('no digit found: the picture is blank')
    ink = np.clip(pixels / peak, 0, 1)
    ink[ink < 0.2] = 0  # paper grain and shadows are not ink
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = ink.shape
    scale = 20.0 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS), np.float32) / 255.0
    small = np.clip(small, 0, 1)
    cy, cx = (np.indices(small.shape) * small).reshape(2, -1).sum(1) / max(small.sum(), 1e-6)
    top = int(round(14 - cy))
    left = int(round(14 - cx))
    top = min(max(top, 0), 28 - small.shape[0])  # keep the whole digit in the frame
    left = min(max(left, 0), 28 - small.shape[1])
    out = np.zeros((28, 28), np.float32)
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out[..., None]


class Predictor:
    """An exported SavedModel, loaded with plain TensorFlow 2."""

    def __init__(self, export_dir):
        import tensorflow as tf
        self.tf = tf
        self.model = tf.saved_model.load(export_dir)
        self.serve = self.model.signatures['serving_default']

    def __call__(self, images):
        out = self.serve(images=self.tf.constant(np.asarray(images, np.float32)))
        return out['probabilities'].numpy(), out['digit'].numpy()


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('export_dir', None, 'A SavedModel written by graph_mnist.export.')
    flags.DEFINE_integer('top', 1, 'How many digits to list per file, most likely first.',
                         lower_bound=1, upper_bound=10)
    flags.mark_flag_as_required('export_dir')


def main(argv):
    paths = argv[1:]
    try:
        predictor = Predictor(FLAGS.export_dir)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f'cannot load the model in {FLAGS.export_dir}: '
                        f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
    images, readable, failed = [], [], 0
    for path in paths:
        try:
            images.append(mnist_like(load_image(path)))
            readable.append(path)
        except ImageError as e:
            logging.error('%s: %s', path, e)
            failed += 1
    if images:
        probabilities, digits = predictor(np.stack(images))
        for path, p, digit in zip(readable, probabilities, digits):
            best = np.argsort(-p)[:FLAGS.top]
            print(f'{path}: {digit} ({p[digit]:.3f})' if FLAGS.top == 1 else
                  f'{path}: ' + ', '.join(f'{d} ({p[d]:.3f})' for d in best))
    return 1 if failed else 0


if __name__ == '__main__':
    cli.run(main, define_flags, positional='image file')
