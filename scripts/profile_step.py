r"""Where a training step's time goes: TensorFlow's compute against everything else.

    python scripts/profile_step.py --model=conv_dropout --steps=300

Times, in one process:
  loop      train.training_step as graph_mnist.train calls it (batch slicing, feed_dict,
            Session.run, fetching the loss);
  run only  the same Session.run on an already sliced batch;
  overhead  Session.run with the same feed_dict fetching only a fed placeholder: the
            cost of a call, converting the feeds and returning, without the network;
  traced    the span of the executor inside Session.run from TensorFlow's own step
            statistics (RunOptions FULL_TRACE; first op start to last op end), for
            reference (tracing itself slows the kernels down a little);
and reports the share of a loop step spent outside TensorFlow's compute:
(loop - run only + overhead) / loop. With
--session_config, tries the thread settings named there too (e.g. intra2-inter1).
"""

if __name__ == '__main__':
    from graph_mnist import quiet
    quiet.quiet_tensorflow()

import collections
import statistics
import time

from absl import app
from absl import flags
import tensorflow as tf

from graph_mnist import data
from graph_mnist import models
from graph_mnist import train

v1 = tf.compat.v1
FLAGS = flags.FLAGS


def per_step(fn, steps):
    start = time.perf_counter()
    for step in range(steps):
        fn(step)
    return (time.perf_counter() - start) / steps


def traced_compute_seconds(sess, g, feed, steps=30, by_kind=None):
    """Median executor span of traced steps; adds each op kind's time to by_kind."""
    options = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)
    spans = []
    for _ in range(steps):
        metadata = v1.RunMetadata()
        sess.run(g.train_step, feed, options=options, run_metadata=metadata)
        starts, ends = [], []
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                starts.append(node.all_start_micros)
                ends.append(node.all_start_micros + node.all_end_rel_micros)
                if by_kind is not None:  # "name = OpType(inputs)"
                    label = node.timeline_label
                    kind = label.split('=')[1].split('(')[0].strip() if '=' in label \
                        else node.node_name
                    by_kind[kind] += node.all_end_rel_micros / 1e6 / steps
        spans.append((max(ends) - min(starts)) / 1e6)
    return statistics.median(spans)


def main(argv):
    del argv
    tf.get_logger().setLevel('ERROR')
    mnist = data.load(log=lambda m: None)
    g = models.build(FLAGS.model)
    sess = train.open_session(g)
    sess.run(g.init)
    batches = data.Batches(mnist.train_images, mnist.train_labels, 100, 0)
    for step in range(50):
        train.training_step(sess, g, *batches(step), step)
    X, Y = batches(50)
    feed = {g.X: X, g.Y_: Y, g.pkeep: g.spec.pkeep, g.step: 50}
    loop, run_only, overhead, compute = [], [], [], []
    by_kind = collections.Counter()
    for _ in range(FLAGS.repeats):  # interleaved, median kept
        loop.append(per_step(lambda s: train.training_step(sess, g, *batches(s), s),
                             FLAGS.steps))
        run_only.append(per_step(lambda s: sess.run([g.train_step, g.cross_entropy], feed),
                                 FLAGS.steps))
        overhead.append(per_step(lambda s: sess.run(g.pkeep, feed), FLAGS.steps))
        compute.append(traced_compute_seconds(sess, g, feed, by_kind=by_kind))
    loop, run_only, overhead, compute = (statistics.median(x) for x in
                                         (loop, run_only, overhead, compute))
    outside = loop - run_only + overhead
    print(f'{FLAGS.model}: loop {loop * 1e3:.3f} ms/step; Session.run alone '
          f'{run_only * 1e3:.3f} ms; a call with the same feeds and no network '
          f'{overhead * 1e3:.3f} ms; traced executor span {compute * 1e3:.3f} ms')
    print(f'outside TensorFlow compute: {outside / loop:.1%} of a loop step '
          f'(slicing the batch {(loop - run_only) / loop:.1%}, '
          f'Session.run call and feeds {overhead / loop:.1%})')
    total = sum(by_kind.values())
    print('where the compute goes (traced op time by kind, summed over both cores):')
    for kind, seconds in by_kind.most_common(8):
        print(f'  {kind:34} {seconds / FLAGS.repeats * 1e3:6.3f} ms  {seconds / total:5.1%}')
    sess.close()


if __name__ == '__main__':
    flags.DEFINE_string('model', 'conv_dropout', 'Network to profile.')
    flags.DEFINE_integer('steps', 300, 'Steps per timing.')
    flags.DEFINE_integer('repeats', 3, 'Interleaved timings (median kept).')
    app.run(main)
