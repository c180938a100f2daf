r"""Exports a trained run as a TensorFlow SavedModel, ready to serve.

    python -m graph_mnist.export --workdir=runs/conv_dropout --export_dir=exported/conv_dropout

The talk ends by pushing the trained model to production behind an API. The SavedModel
has one signature, `serving_default`:

    images         float32 [N, 28, 28, 1] in [0, 1]  (white digit on black, as MNIST)
    -> probabilities float32 [N, 10]
       digit         int64   [N]

Dropout is off: the network is rebuilt for inference with pkeep a constant 1.0, and
its weights and biases are restored from the run's latest checkpoint. Plain TensorFlow
2 loads it, with no graph_mnist code: tf.saved_model.load(dir).signatures['serving_default'].
"""

if __name__ == '__main__':  # before TensorFlow is imported: process-wide, entry point only
    from graph_mnist import quiet
    quiet.quiet_tensorflow()

import json
import os
import sys

from absl import app
from absl import flags
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import models

v1 = tf.compat.v1


class ExportError(Exception):
    """The run cannot be exported; the message says why."""


def inference_graph(model):
    """The network alone, for serving: X in, probabilities and digit out, no dropout."""
    graph = tf.Graph()
    with graph.as_default():
        X = v1.placeholder(tf.float32, [None, 28, 28, 1], name='X')
        Ylogits = models.NETWORKS[model].network(X, tf.constant(1.0))  # pkeep 1: all neurons
        Y = tf.nn.softmax(Ylogits, name='Y')
        digit = tf.argmax(Y, 1, name='digit')
        saver = v1.train.Saver(v1.trainable_variables())  # weights and biases, by name
    return graph, X, Y, digit, saver


def export(workdir, export_dir):
    """Writes the SavedModel of the latest checkpoint of `workdir`; returns its step."""
    try:
        with open(os.path.join(workdir, 'history.json')) as f:
            model = json.load(f)['model']
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f'{workdir} holds no readable training run ({e})') from None
    found = checkpoints.latest(workdir)
    if found is None:
        raise ExportError(f'{workdir} holds no checkpoint to export')
    path, step, _ = found
    if os.path.exists(export_dir):
        raise ExportError(f'{export_dir} already exists; choose another --export_dir')
    graph, X, Y, digit, saver = inference_graph(model)
    with graph.as_default(), v1.Session(graph=graph) as sess:
        checkpoints.restore(sess, saver, path)
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            inputs={'images': X}, outputs={'probabilities': Y, 'digit': digit})
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.tag_constants.SERVING],
            signature_def_map={'serving_default': signature}, strip_default_attrs=True)
        builder.save()
    return model, step


FLAGS = flags.FLAGS


def define_flags():
    """The command line; defined by the entry point only, so that the modules import
    side by side (train, export, explain all take --workdir)."""
    flags.DEFINE_string('workdir', None, 'The training run to export (its latest checkpoint).')
    flags.DEFINE_string('export_dir', None, 'Where to write the SavedModel (must not exist).')
    flags.mark_flags_as_required(['workdir', 'export_dir'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    tf.get_logger().setLevel('ERROR')
    try:
        model, step = export(FLAGS.workdir, FLAGS.export_dir)
    except (ExportError, checkpoints.CheckpointError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'{model} after {step} steps exported to {FLAGS.export_dir}\n'
          f'  python -m graph_mnist.predict --export_dir={FLAGS.export_dir} IMAGE...')
    return 0


if __name__ == '__main__':
    define_flags()
    app.run(main)
