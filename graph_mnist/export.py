r"""Exports a trained run as a TensorFlow SavedModel, laid out for TensorFlow Serving.

    graph-mnist-export --workdir=runs/conv_dropout --export_dir=exported/conv_dropout

--export_dir is a model base path, as TensorFlow Serving's --model_base_path: each export
adds the next numbered version (exported/conv_dropout/1, then 2, ...), written under a
hidden name and renamed when complete, so a server polling the base path never sees half
a version. The talk ends by pushing the trained model to production behind an API. The
SavedModel has two signatures:

    serving_default   images        float32 [N, 28, 28, 1] in [0, 1] (white digit on black)
                      -> probabilities float32 [N, 10], digit int64 [N]
    from_image        image_bytes   string [N]: PNG or JPEG files, any size ({"b64": ...}
                                    in TensorFlow Serving's JSON)
                      -> probabilities, digit, and mnist float32 [N, 28, 28, 1], the
                         picture the network read (graph_mnist.preprocess made it)

Dropout is off: the network is rebuilt for inference with pkeep a constant 1.0, and
its weights and biases are restored from the run's latest checkpoint. Images outside
[0, 1] (or NaN) are refused by the graph itself. Plain TensorFlow 2 loads it, with no
graph_mnist code: tf.saved_model.load(dir).signatures['serving_default'], and so does
TensorFlow Serving.

`graph-mnist-export` is `python -m graph_mnist.export`: the same program.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os
from typing import NamedTuple

from absl import flags
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import preprocess
from graph_mnist import runs
from graph_mnist import talk
from graph_mnist.errors import UserError

v1 = tf.compat.v1


class ExportError(UserError):
    """The run cannot be exported; the message says why."""


OUT_OF_RANGE = 'images must be numbers in [0, 1] (a white digit on black), not NaN'
SAVED_MODEL = 'saved_model.pb'


class Inference(NamedTuple):
    graph: tf.Graph
    image_bytes: tf.Tensor  # string [N], encoded pictures
    mnist: tf.Tensor        # [N, 28, 28, 1] they prepared
    X: tf.Tensor            # [N, 28, 28, 1] images, fed directly or else `mnist`
    Y: tf.Tensor
    digit: tf.Tensor
    saver: v1.train.Saver


def inference_graph(model, layers=None):
    """The network alone, for serving, no dropout; batch norm with the moving averages
    gathered in training (tst True). X is fed images, or else the pictures prepared from
    image_bytes: one network behind both signatures. layers: a dense network's depth
    when the run changed it (--layers)."""
    spec = talk.with_changes(model, layers=layers)
    graph = tf.Graph()
    with graph.as_default():
        image_bytes = v1.placeholder(tf.string, [None], name='image_bytes')
        mnist = tf.identity(preprocess.mnist_like_batch(image_bytes), name='mnist')
        X = v1.placeholder_with_default(mnist, [None, 28, 28, 1], name='X')
        in_range = tf.reduce_all(tf.logical_and(X >= 0, X <= 1))  # NaN compares False
        checked = tf.cond(in_range, lambda: tf.identity(X),
                          preprocess.refuse(OUT_OF_RANGE, tf.shape(X), tf.float32))
        # pkeep 1: all neurons; batch norm on its moving averages (tst True)
        Ylogits = spec.logits(checked, tf.constant(1.0), tst=True)
        Y = tf.nn.softmax(Ylogits, name='Y')
        digit = tf.argmax(Y, 1, name='digit')
        # weights, biases (offsets, scales) and batch norm's moving averages, by name
        saver = v1.train.Saver(v1.global_variables())
    return Inference(graph, image_bytes, mnist, X, Y, digit, saver)


def versions(base_path):
    """{version: directory} of the numbered versions under a model base path (other
    names are skipped, as TensorFlow Serving skips them)."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    return {int(name): os.path.join(base_path, name) for name in names
            if name.isdigit() and os.path.isfile(os.path.join(base_path, name, SAVED_MODEL))}


def resolve(path):
    """A SavedModel directory: `path` itself when it is one (a version directory), else
    the newest version under the base path `path`. ExportError when there is none."""
    if os.path.isfile(os.path.join(path, SAVED_MODEL)):
        return path
    found = versions(path)
    if not found:
        raise ExportError(f'{path} holds no SavedModel and no numbered version directory '
                          f'(write one with python -m graph_mnist.export)')
    return found[max(found)]


def export(workdir, export_dir):
    """Writes the latest checkpoint of `workdir` as the next version under the base path
    `export_dir`; returns (model, step, version directory)."""
    history = runs.read_history(workdir)
    model = history['model']
    found = checkpoints.latest(workdir)
    if found is None:
        raise ExportError(f'{workdir} holds no checkpoint to export')
    path, step, _ = found
    if os.path.isfile(os.path.join(export_dir, SAVED_MODEL)):
        raise ExportError(f'{export_dir} is a SavedModel itself (exported before versions '
                          f'were numbered); choose a new --export_dir, or move it to '
                          f'{os.path.join(export_dir, "1")}')
    existing = versions(export_dir)
    version = max(existing, default=0) + 1
    target = os.path.join(export_dir, str(version))
    partial = os.path.join(export_dir, f'.{version}.partial-{os.getpid()}')
    net = inference_graph(model, history.get('layers'))
    with net.graph.as_default(), v1.Session(graph=net.graph) as sess:
        checkpoints.restore(sess, net.saver, path)
        predict_def = v1.saved_model.signature_def_utils.predict_signature_def
        signatures = {
            'serving_default': predict_def(
                inputs={'images': net.X},
                outputs={'probabilities': net.Y, 'digit': net.digit}),
            'from_image': predict_def(
                inputs={'image_bytes': net.image_bytes},
                outputs={'probabilities': net.Y, 'digit': net.digit, 'mnist': net.mnist}),
        }
        builder = v1.saved_model.Builder(partial)
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
            strip_default_attrs=True)
        builder.save()
    write_warmup(partial)
    os.rename(partial, target)  # complete, or not there at all
    return model, step, target


WARMUP = os.path.join('assets.extra', 'tf_serving_warmup_requests')


def warmup_requests():
    """PredictRequests for both signatures, as a server's first requests look: one
    image of numbers, and one PNG picture of a stroke (a 1) for from_image."""
    import io

    import numpy as np
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2
    picture = np.zeros((28, 28), np.uint8)
    picture[4:24, 13:16] = 255
    png = io.BytesIO()
    Image.fromarray(picture).save(png, 'PNG')
    images = predict_pb2.PredictRequest()
    images.model_spec.signature_name = 'serving_default'
    images.inputs['images'].CopyFrom(tf.make_tensor_proto(
        (picture / 255).astype(np.float32).reshape(1, 28, 28, 1)))
    pictures = predict_pb2.PredictRequest()
    pictures.model_spec.signature_name = 'from_image'
    pictures.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto([png.getvalue()]))
    return [images, pictures]


def write_warmup(version_dir):
    """TensorFlow Serving's warm-up file: PredictionLogs in a TFRecord file under
    assets.extra/, replayed by TF Serving (and graph_mnist.serve) before the version
    answers, so its first requests do not pay for the first Session call of a shape."""
    from tensorflow_serving.apis import prediction_log_pb2
    os.makedirs(os.path.join(version_dir, 'assets.extra'), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_dir, WARMUP)) as writer:
        for request in warmup_requests():
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('workdir', None, 'The training run to export (its latest checkpoint).')
    flags.DEFINE_string('export_dir', None, 'The model base path: the SavedModel is written '
                        'as its next numbered version (1, 2, ...).')
    flags.mark_flags_as_required(['workdir', 'export_dir'])


def main(argv):
    del argv
    try:
        model, step, target = export(FLAGS.workdir, FLAGS.export_dir)
    except OSError as e:
        raise ExportError(f'cannot write {FLAGS.export_dir}: {e.strerror or e}') from None
    print(f'{model} after {step} steps exported to {target}\n'
          f'  python -m graph_mnist.predict --export_dir={FLAGS.export_dir} IMAGE...\n'
          f'  python -m graph_mnist.serve --model_base_path={FLAGS.export_dir}')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
