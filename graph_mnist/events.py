"""TensorBoard event files for a run: `tensorboard --logdir <workdir>`.

Written with TensorFlow 2's summary writer from values the training loop has already
fetched, so the training graph stays exactly the talk's graph (no summary ops, no
extra Session.run). The graph itself goes in too, for TensorBoard's Graphs tab.
"""

import numpy as np
import tensorflow as tf


class EventLog:
    """Scalars, histograms, an image of misrecognised digits, and the graph."""

    def __init__(self, logdir, graph):
        self.writer = tf.summary.create_file_writer(logdir)
        with self.writer.as_default():
            tf.summary.graph(graph)

    def training(self, step, accuracy, loss, lr):
        with self.writer.as_default(step=step):
            tf.summary.scalar('accuracy/train', accuracy)
            tf.summary.scalar('cross_entropy/train', loss)
            tf.summary.scalar('learning_rate', lr)

    def test(self, step, accuracy, loss, variables, misrecognised=None):
        """variables: {name: array} of the weights and biases; misrecognised: an RGB grid."""
        with self.writer.as_default(step=step):
            tf.summary.scalar('accuracy/test', accuracy)
            tf.summary.scalar('cross_entropy/test', loss)
            for name, value in variables.items():
                kind = 'weights' if name.startswith('W') else 'biases'
                tf.summary.histogram(f'{kind}/{name}', value)
            # (an empty picture would abort the process inside TensorFlow's PNG encoder)
            if misrecognised is not None and np.size(misrecognised):
                tf.summary.image('misrecognised_test_digits',
                                 np.asarray(misrecognised, np.float32)[None], max_outputs=1)

    def close(self):
        self.writer.flush()
        self.writer.close()
