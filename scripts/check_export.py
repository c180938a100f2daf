r"""Checks an exported run: its test accuracy through plain TensorFlow, and digits of ours.

    python scripts/check_export.py --workdir=runs/latest --export_dir=exported/latest

Exports the run (unless the base path --export_dir already holds a version), loads its
newest version with tf.saved_model.load only, measures the accuracy on the 10,000 test
images beside the run's final test accuracy, and reads the digit pictures of
tests/fixtures/digits (none of them from MNIST; the true digit is the first character of
each name).
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import glob
import os

from absl import flags
from absl import logging

from graph_mnist import data
from graph_mnist import export
from graph_mnist import predict
from graph_mnist import runs

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('workdir', None, 'The training run.')
    flags.DEFINE_string('export_dir', None, 'Its SavedModel (written if missing).')
    flags.DEFINE_string('fixtures', 'tests/fixtures/digits', 'Digit pictures to read.')
    flags.DEFINE_string('data_dir', None, 'MNIST directory (default: the per-user cache).')
    flags.mark_flags_as_required(['workdir', 'export_dir'])


def main(argv):
    del argv
    if not export.versions(FLAGS.export_dir):
        export.export(FLAGS.workdir, FLAGS.export_dir)
    history = runs.read_history(FLAGS.workdir)
    predictor = predict.Predictor(FLAGS.export_dir)
    mnist = data.load(FLAGS.data_dir, log=logging.info)
    _, digits = predictor(mnist.test_images)
    accuracy = float((digits == mnist.test_digits).mean())
    print(f"test accuracy through tf.saved_model.load: {accuracy:.4f}; the run's final "
          f"test accuracy: {history['final_test_accuracy']:.4f}")

    paths = sorted(glob.glob(os.path.join(FLAGS.fixtures, '*.png')))
    probabilities, digits, _ = predictor.from_files([predict.read_file(p) for p in paths])
    right = 0
    for path, p, digit in zip(paths, probabilities, digits):
        truth = int(os.path.basename(path)[0])
        right += digit == truth
        print(f'  {os.path.basename(path):12} {digit} ({p[digit]:.3f})'
              + ('' if digit == truth else f'   wrong: it is a {truth}'))
    print(f'our own digits: {right} of {len(paths)} right')


if __name__ == '__main__':
    cli.run(main, define_flags)
