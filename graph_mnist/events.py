"""TensorBoard event files for a run: `tensorboard --logdir <workdir>`.

Written the TensorFlow 1 way, with `tf.compat.v1.summary.FileWriter` and the session's
graph, from values the training loop has already fetched: the summaries are built as
protocol buffers in Python (histograms with numpy, the image with Pillow), so the
training graph stays exactly the talk's (no summary ops, no extra Session.run) and
logging costs no TensorFlow op dispatch (BUILD_NOTES.md, "Speed").
"""

import io

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def histogram(values, buckets=30):
    """A TensorBoard histogram of all `values`."""
    values = np.asarray(values, np.float64).ravel()
    counts, edges = np.histogram(values, bins=buckets)
    return v1.HistogramProto(min=float(values.min()), max=float(values.max()),
                             num=float(values.size), sum=float(values.sum()),
                             sum_squares=float(np.dot(values, values)),
                             bucket_limit=edges[1:].tolist(), bucket=counts.tolist())


def png(rgb):
    """An RGB picture in [0, 1] as a TensorBoard image."""
    from PIL import Image
    pixels = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format='PNG')
    return v1.Summary.Image(height=pixels.shape[0], width=pixels.shape[1], colorspace=3,
                            encoded_image_string=encoded.getvalue())


class EventLog:
    """Scalars, histograms, an image of misrecognised digits, and the graph."""

    def __init__(self, logdir, graph):
        with graph.as_default():  # FileWriter is TF1 API: it wants its graph as default
            self.writer = v1.summary.FileWriter(logdir, graph)

    def _write(self, step, values):
        """values: {tag: number, HistogramProto or Summary.Image}, one event at `step`."""
        summary = v1.Summary()
        for tag, value in values.items():
            if isinstance(value, v1.HistogramProto):
                summary.value.add(tag=tag, histo=value)
            elif isinstance(value, v1.Summary.Image):
                summary.value.add(tag=tag, image=value)
            else:
                summary.value.add(tag=tag, simple_value=float(value))
        self.writer.add_summary(summary, step)

    def training(self, step, accuracy, loss, lr):
        self._write(step, {'accuracy/train': accuracy, 'cross_entropy/train': loss,
                           'learning_rate': lr})

    def test(self, step, accuracy, loss, variables, misrecognised=None):
        """variables: {name: array} of the weights and biases; misrecognised: an RGB grid."""
        values = {'accuracy/test': accuracy, 'cross_entropy/test': loss}
        for name, value in variables.items():
            kind = 'weights' if name.startswith('W') else 'biases'
            values[f'{kind}/{name}'] = histogram(value)
        if misrecognised is not None and np.size(misrecognised):
            values['misrecognised_test_digits'] = png(misrecognised)
        self._write(step, values)

    def close(self):
        self.writer.close()
