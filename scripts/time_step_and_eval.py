"""Milliseconds per training step and per test evaluation, for a quick A/B of settings.

    for v in 1 0 1 0; do TF_ENABLE_ONEDNN_OPTS=$v python scripts/time_step_and_eval.py conv_dropout; done

Median of 3 timings of 300 training steps (after 50 of warm-up) and the mean of 3
evaluations of the 10,000 test images, for each network named.
"""

import os
import statistics
import sys
import time

from graph_mnist import quiet

quiet.quiet_tensorflow()

import tensorflow as tf  # noqa: E402

from graph_mnist import data, models, train  # noqa: E402


def main(names):
    tf.get_logger().setLevel('ERROR')
    mnist = data.load(log=lambda m: None)
    for model in names:
        g = models.build(model)
        sess = train.open_session(g)
        sess.run(g.init)
        batches = data.Batches(mnist.train_images, mnist.train_labels, 100, 0)
        for step in range(50):
            train.training_step(sess, g, *batches(step), step)
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            for step in range(300):
                train.training_step(sess, g, *batches(step), step)
            timings.append((time.perf_counter() - start) / 300 * 1000)
        feed = {g.X: mnist.test_images, g.Y_: mnist.test_labels, g.pkeep: 1.0}
        start = time.perf_counter()
        for _ in range(3):
            sess.run(g.accuracy, feed)
        evaluation = (time.perf_counter() - start) / 3 * 1000
        print(f"{model}: TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')} "
              f"{statistics.median(timings):.3f} ms/step, evaluation {evaluation:.0f} ms")
        sess.close()


if __name__ == '__main__':
    main(sys.argv[1:] or ['conv_dropout'])
