r"""Times variants of the training step side by side, to see what speeds the loop up.

    python scripts/try_loop_variants.py --model=conv_dropout
    python scripts/try_loop_variants.py --model=softmax

One process, the variants interleaved (A, B, C, A, B, C, ...), median of --repeats
timings of --steps steps each, after a warm-up; every variant trains its own copy of
the network from the same initial weights on the same batches:

  feed_dict + loss    Session.run([train_step, cross_entropy], feed_dict)  (the loop before)
  feed_dict           Session.run(train_step, feed_dict): the loss not fetched
  make_callable       Session.make_callable([train_step], feed_list): no feed_dict
  intra2_inter1       Session threads: 2 for each op, 1 op at a time
  intra1_inter2       Session threads: 1 for each op, 2 ops at a time
  xla                 XLA auto-clustering (global_jit_level ON_1)
"""

if __name__ == '__main__':
    from graph_mnist import quiet
    quiet.quiet_tensorflow()

import statistics
import time

from absl import app
from absl import flags
import tensorflow as tf

from graph_mnist import data
from graph_mnist import models

v1 = tf.compat.v1
FLAGS = flags.FLAGS


def config(intra=0, inter=0, xla=False):
    c = v1.ConfigProto()
    c.intra_op_parallelism_threads, c.inter_op_parallelism_threads = intra, inter
    if xla:
        c.graph_options.optimizer_options.global_jit_level = v1.OptimizerOptions.ON_1
    return c


def variant(name, model, session_config, fetch_loss=False, callable_=False):
    g = models.build(model)
    sess = v1.Session(graph=g.graph, config=session_config)
    sess.run(g.init)
    fetches = [g.train_step, g.cross_entropy] if fetch_loss else g.train_step
    if callable_:
        run = sess.make_callable(fetches, feed_list=[g.X, g.Y_, g.pkeep, g.step])
        return name, lambda X, Y, s: run(X, Y, g.spec.pkeep, s)
    return name, lambda X, Y, s: sess.run(
        fetches, {g.X: X, g.Y_: Y, g.pkeep: g.spec.pkeep, g.step: s})


def main(argv):
    del argv
    tf.get_logger().setLevel('ERROR')
    mnist = data.load(log=lambda m: None)
    batches = data.Batches(mnist.train_images, mnist.train_labels, 100, 0)
    m = FLAGS.model
    variants = [variant('feed_dict + loss', m, config(), fetch_loss=True),
                variant('feed_dict', m, config()),
                variant('make_callable', m, config(), callable_=True),
                variant('intra2_inter1', m, config(2, 1)),
                variant('intra1_inter2', m, config(1, 2)),
                variant('xla', m, config(xla=True))]
    times = {name: [] for name, _ in variants}
    for _, step in variants:
        for s in range(FLAGS.warmup):
            step(*batches(s), s)
    for repeat in range(FLAGS.repeats):
        for name, step in variants:
            first = FLAGS.warmup + repeat * FLAGS.steps
            start = time.perf_counter()
            for s in range(first, first + FLAGS.steps):
                step(*batches(s), s)
            times[name].append((time.perf_counter() - start) / FLAGS.steps * 1000)
    base = statistics.median(times['feed_dict + loss'])
    print(f'{m}: ms per training step, median of {FLAGS.repeats} x {FLAGS.steps} steps')
    for name, t in times.items():
        print(f'  {name:18} {statistics.median(t):7.3f} ms   x{base / statistics.median(t):.2f} '
              f'speed   {[round(x, 3) for x in t]}')


if __name__ == '__main__':
    flags.DEFINE_string('model', 'conv_dropout', 'Network.')
    flags.DEFINE_integer('steps', 300, 'Steps per timing.')
    flags.DEFINE_integer('repeats', 3, 'Timings per variant.')
    flags.DEFINE_integer('warmup', 30, 'Steps before timing.')
    app.run(main)
