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

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os

from absl import flags
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import models
from graph_mnist import runs
from graph_mnist.errors import UserError

v1 = tf.compat.v1


class ExportError(UserError):
    """The run cannot be exported; the message says why."""


def inference_graph(model):
    """The network alone, for serving: X in, probabilities and digit out, no dropout;
    batch norm with the moving averages gathered in training (tst True)."""
    spec = models.NETWORKS[model]
    graph = tf.Graph()
    with graph.as_default():
        X = v1.placeholder(tf.float32, [None, 28, 28, 1], name='X')
        if spec.batch_norm:  # tst True: the averages; the step only moves them (unused here)
            Ylogits = spec.network(X, tf.constant(1.0), tf.constant(True), tf.constant(0))
        else:
            Ylogits = spec.network(X, tf.constant(1.0))  # pkeep 1: all neurons
        Y = tf.nn.softmax(Ylogits, name='Y')
        digit = tf.argmax(Y, 1, name='digit')
        # weights, biases (offsets, scales) and batch norm's moving averages, by name
        saver = v1.train.Saver(v1.global_variables())
    return graph, X, Y, digit, saver


def export(workdir, export_dir):
    """Writes the SavedModel of the latest checkpoint of `workdir`; returns its step."""
    model = runs.read_history(workdir)['model']
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
    flags.DEFINE_string('workdir', None, 'The training run to export (its latest checkpoint).')
    flags.DEFINE_string('export_dir', None, 'Where to write the SavedModel (must not exist).')
    flags.mark_flags_as_required(['workdir', 'export_dir'])


def main(argv):
    del argv
    try:
        model, step = export(FLAGS.workdir, FLAGS.export_dir)
    except OSError as e:
        raise ExportError(f'cannot write {FLAGS.export_dir}: {e.strerror or e}') from None
    print(f'{model} after {step} steps exported to {FLAGS.export_dir}\n'
          f'  python -m graph_mnist.predict --export_dir={FLAGS.export_dir} IMAGE...')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
