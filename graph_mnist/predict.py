r"""Reads digits from image files with an exported network.

    graph-mnist-predict --export_dir=exported/conv_dropout digit.png photo.jpg
    graph-mnist-predict --export_dir=exported/conv_dropout/2 --top=3 *.png

--export_dir is a model base path (its newest version is read) or one version directory.
Any PNG or JPEG, any size: the exported graph makes it look like MNIST first, the way
MNIST itself was made (graph_mnist.preprocess, the from_image signature, the same for
the drawing page and every REST client): grayscale; dark ink on light paper inverted to
a light digit on black; cropped to its ink, scaled to fit 20x20 keeping its proportions,
placed in 28x28 with its centre of mass at the centre. One line per file: the digit and
its probability. A file that cannot be read gets its own message and the others are
still read. This loads the SavedModel; it never builds a network.

`graph-mnist-predict` is `python -m graph_mnist.predict`: the same program.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os

from absl import flags
from absl import logging
import numpy as np

from graph_mnist import export
from graph_mnist import preprocess
from graph_mnist.errors import UserError

MAX_BYTES = 50 * 1024 * 1024  # a digit needs far less; more is a mistake, not a digit


class ImageError(UserError):
    """This file cannot be read as a digit; the message says why."""


def read_file(path):
    """The file's bytes, or ImageError (missing, empty, too large)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise ImageError(f'the file is {size / 1e6:.0f} MB, more than the '
                             f'{MAX_BYTES / 1e6:.0f} MB accepted for one digit')
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f'cannot read it: {e.strerror}') from None
    if not data:
        raise ImageError('the file is empty')
    return data


class Predictor:
    """An exported SavedModel, loaded with plain TensorFlow 2: a version directory, or
    the newest version under a model base path."""

    def __init__(self, export_dir):
        import tensorflow as tf
        self.tf = tf
        self.path = export.resolve(export_dir)
        try:
            self.model = tf.saved_model.load(self.path)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f'cannot load the model in {self.path}: {first}') from None
        self.serve = self.model.signatures['serving_default']
        self.read = self.model.signatures.get('from_image')

    def __call__(self, images):
        """float32 [N, 28, 28, 1] in [0, 1] -> (probabilities [N, 10], digits [N])."""
        out = self.serve(images=self.tf.constant(np.asarray(images, np.float32)))
        return out['probabilities'].numpy(), out['digit'].numpy()

    def from_files(self, contents):
        """Encoded pictures -> (probabilities, digits, the 28x28 pictures read), prepared
        by the graph (graph_mnist.preprocess). ImageError says why one is refused."""
        if self.read is None:
            raise UserError(f'{self.path} was exported before pictures could be sent to '
                            f'it (no from_image signature): export the run again')
        try:
            out = self.read(image_bytes=self.tf.constant(contents, self.tf.string))
        except self.tf.errors.InvalidArgumentError as e:
            raise ImageError(preprocess.reason(e)) from None
        return out['probabilities'].numpy(), out['digit'].numpy(), out['mnist'].numpy()


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('export_dir', None, 'A model base path written by graph_mnist.export '
                        '(its newest version is read) or one version directory.')
    flags.DEFINE_integer('top', 1, 'How many digits to list per file, most likely first.',
                         lower_bound=1, upper_bound=10)
    flags.mark_flag_as_required('export_dir')


def main(argv):
    paths = argv[1:]
    predictor = Predictor(FLAGS.export_dir)
    contents, readable, failed = [], [], 0
    for path in paths:
        try:
            contents.append(read_file(path))
            readable.append(path)
        except ImageError as e:
            logging.error('%s: %s', path, e)
            failed += 1
    try:  # all at once; when one picture is refused, each alone, to say which
        answers = [(readable, predictor.from_files(contents)[:2])] if contents else []
    except ImageError:
        answers = []
        for path, data in zip(readable, contents):
            try:
                answers.append(([path], predictor.from_files([data])[:2]))
            except ImageError as e:
                logging.error('%s: %s', path, e)
                failed += 1
    for names, (probabilities, digits) in answers:
        for path, p, digit in zip(names, probabilities, digits):
            best = np.argsort(-p)[:FLAGS.top]
            print(f'{path}: {digit} ({p[digit]:.3f})' if FLAGS.top == 1 else
                  f'{path}: ' + ', '.join(f'{d} ({p[d]:.3f})' for d in best))
    return 1 if failed else 0


if __name__ == '__main__':
    cli.run(main, define_flags, positional='image file')
