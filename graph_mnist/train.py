r"""Trains one network of the talk: the command line.

    graph-mnist-train --model=conv_dropout

Flags, then one call: graph_mnist.training.train_and_evaluate, which builds the graph,
runs the talk's Session loop and keeps the books. With TF_CONFIG set, this process is
one task of a cluster (graph_mnist.distributed).

`graph-mnist-train` is `python -m graph_mnist.train`: the same program.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import dataclasses

from absl import app
from absl import flags

from graph_mnist import dashboard
from graph_mnist import data
from graph_mnist import distributed
from graph_mnist import rewrite
from graph_mnist import talk
from graph_mnist import training
from graph_mnist import training_graph
from graph_mnist.styles import eager

Config = training.Config  # the settings the flags make

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """The command line (flag_values: where to define it; tests pass their own)."""
    defaults = Config  # a dataclass's defaults are its class attributes: one per setting
    own = dict(flag_values=flag_values)
    flags.DEFINE_enum('model', defaults.model, list(talk.NETWORKS),
                      'Which network of the talk to train, in the talk\'s order.', **own)
    flags.DEFINE_integer('iterations', None, 'Training steps (default: the talk\'s count for '
                         'the model: 2,000 for softmax, 10,000 for the others).',
                         lower_bound=1, **own)
    flags.DEFINE_integer('batch_size', defaults.batch_size, 'Training images per step.',
                         lower_bound=1, upper_bound=60000, **own)
    flags.DEFINE_integer('seed', defaults.seed, 'Seeds the initial weights, dropout and the '
                         'data order.', **own)
    flags.DEFINE_string('data_dir', None, 'Directory of the four MNIST IDX files; fetched there '
                        f'when missing (default {data.default_data_dir()}).', **own)
    flags.DEFINE_string('workdir', None, 'Where this run writes its files (default '
                        'runs/<model>-<date>-<time>, and runs/latest points to it); an earlier '
                        'run there is never overwritten.', **own)
    flags.DEFINE_integer('eval_every', defaults.eval_every, 'Evaluate on all 10,000 test '
                         'images every this many steps.', lower_bound=1, **own)
    flags.DEFINE_integer('log_every', defaults.log_every, 'Log training accuracy and loss every '
                         'this many steps.', lower_bound=1, **own)
    flags.DEFINE_integer('checkpoint_every', defaults.checkpoint_every, 'Save a checkpoint every '
                         'this many steps (and at the end, and when stopped by Ctrl-C or '
                         'SIGTERM).', lower_bound=1, **own)
    flags.DEFINE_bool('resume', False, 'Continue the run in --workdir from its latest '
                      'checkpoint, with its settings (--iterations may raise its step count).',
                      **own)
    flags.DEFINE_enum('vis', defaults.vis, ['auto', *dashboard.MODES], 'The talk\'s dashboard. '
                      'live: an animated window; save: dashboard.png and dashboard.gif in the '
                      'workdir (and .mp4 with ffmpeg); notebook: in the Jupyter cell; none: '
                      'no figure; auto: notebook in a Jupyter kernel, live where a display '
                      'is, else save.', **own)
    flags.DEFINE_bool('sync_replicas', False, 'On a cluster (TF_CONFIG): synchronous '
                      'updates, one gradient of every worker per step (SyncReplicasOptimizer); '
                      'else asynchronous, as TensorFlow 1 did by default.', **own)
    flags.DEFINE_bool('chief_evaluates', True, 'On a cluster: the chief evaluates on the '
                      'test images every --eval_every steps; --nochief_evaluates leaves that '
                      'to an evaluator task (TF_CONFIG type "evaluator"), the chief '
                      'checkpointing there for it and training on.', **own)
    flags.DEFINE_float('cluster_timeout', 120, 'On a cluster: the longest wait, in seconds, for '
                       'another task (a Session call, the chief\'s initialisation).',
                       lower_bound=1, **own)
    flags.DEFINE_integer('steps_per_run', defaults.steps_per_run, 'Training steps per '
                         'Session.run. 1: the talk\'s loop, one Session.run with its '
                         'feed_dict per step. More: the loop moved into the graph, the '
                         'training set held there and that many steps in a tf.while_loop '
                         '(the same batches and the same numbers). Logging, evaluation and '
                         'checkpoints happen between runs: --log_every, --eval_every and '
                         '--checkpoint_every not given are rounded up to whole runs; given, '
                         'they must be multiples of it.', lower_bound=1,
                         **own)
    flags.DEFINE_enum('style', defaults.style, list(eager.STYLES), 'How the network is '
                      'written and trained. graph: the talk\'s code, a tf.compat.v1 graph '
                      'and Session.run(train_step, feed_dict). function: TensorFlow 2, the '
                      'same network function called in a tf.function, its gradient from a '
                      'tf.GradientTape. keras: Keras 3 layers trained by model.fit. The same '
                      'initial weights, batches, loss and optimizer in all three.', **own)
    flags.DEFINE_enum('precision', defaults.precision, list(training_graph.PRECISIONS),
                      'float32: the talk\'s. bfloat16: the same graph, rewritten by '
                      'TensorFlow\'s graph optimizer to compute its matmuls and convolutions '
                      'in bfloat16 on oneDNN, variables and updates in float32 (CPUs with '
                      'AVX-512 BF16 or AMX; refused elsewhere). float16: the same rewrite '
                      'on a GPU (Grappler\'s CUDA pass), the loss scaled dynamically.', **own)
    _define_experiments(own)
    flags.DEFINE_enum('loss', defaults.loss, list(training_graph.LOSSES), 'stable: the talk\'s '
                      'cross-entropy computed with log_softmax, never NaN. literal: the talk\'s '
                      'line -sum(Y_ * log(Y)) exactly, which goes NaN once a probability hits 0.',
                      **own)


def _by_value(value_of, networks):
    """'0.003: a, b; 0.005: c': the networks grouped by a setting, in the talk's order."""
    groups = {}
    for name in networks:
        groups.setdefault(value_of(talk.NETWORKS[name]), []).append(name)
    return '; '.join(f'{value}: {", ".join(names)}' for value, names in groups.items())


def _define_experiments(own):
    """The experiments the talk invites; each default is the network's own setting."""
    steps = talk.TALK
    flags.DEFINE_float('learning_rate', None, 'The learning rate: the constant rate, or where '
                       'the decay starts (default: the network\'s own, '
                       + _by_value(lambda s: str(s.learning_rate), steps) + ').', **own)
    dropout = [name for name in steps if talk.NETWORKS[name].has_dropout]
    flags.DEFINE_float('pkeep', None, 'Probability of keeping a neuron in training, for the '
                       'networks with dropout (default: the talk\'s code\'s, '
                       + _by_value(lambda s: s.pkeep, dropout) + '; the talk: "pick a '
                       'probability, let\'s say 50%"; --model=conv_bigger --pkeep=0.75 is '
                       'conv_dropout).', **own)
    flags.DEFINE_integer('layers', None, 'Layers of a dense network (five_layers_*), 2 to 5 '
                         '(default 5, the talk\'s; it says "I tried, I promise, with four '
                         'and three and two"): the first hidden layers of 200-100-60-30 are '
                         'kept.', **own)
    flags.DEFINE_enum('bias', None, list(rewrite.BIAS), 'How the biases are added: plus, '
                      'the talk\'s `+ B` (default); bias_add, `tf.nn.bias_add(..., B)`, '
                      'whose gradient oneDNN fuses: what the literal line costs '
                      '(graph_mnist.rewrite, docs/speed.md).', **own)
    flags.DEFINE_enum('batch_norm', None, list(rewrite.BATCH_NORM), 'The batch norm '
                      'networks\' normalisation: moments, tf.nn.moments then '
                      'batch_normalization, as the published code (default); fused, one '
                      'tf.nn.fused_batch_norm.', **own)


def main(argv):
    del argv
    if FLAGS.resume and not FLAGS.workdir:
        raise app.UsageError('--resume needs --workdir, the run to continue')
    names = [field.name for field in dataclasses.fields(Config)]
    settings = {name: FLAGS[name].value for name in names}
    given = {name for name in names if FLAGS[name].present}
    task = distributed.task_from_environment()  # TF_CONFIG: a task of a cluster
    if task:
        return distributed.run(task, settings, FLAGS.workdir, FLAGS.data_dir, FLAGS.resume,
                               given, FLAGS.sync_replicas, FLAGS.cluster_timeout,
                               FLAGS.chief_evaluates)
    return training.train_and_evaluate(settings, FLAGS.workdir, FLAGS.data_dir,
                                       resume=FLAGS.resume, given=given)


if __name__ == '__main__':
    cli.run(main, define_flags)
