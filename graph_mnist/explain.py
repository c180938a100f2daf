r"""The talk's lesson on deferred execution, observed on a real network.

    graph-mnist-explain --model=softmax
    graph-mnist-explain --model=conv_dropout --format=json
    graph-mnist-explain --code --model=five_layers_relu   # the step's code and its diff

"TensorFlow has a deferred execution model": every tf.* call adds a node to a graph
and computes nothing; values exist only when a Session runs a node with every
placeholder it depends on fed. This walks through one network in the order of the
lesson's ideas and prints what it observes, never a number typed in:

  1. building computes nothing          6. TensorFlow rewrites the graph (Grappler)
  2. what each value needs fed          7. what graphs cost (graph_mnist.costs)
  3. the state lives in the Session     8. the loop moved into the graph
  4. a Session.run runs what it needs   9. today's answer: eager, tf.function and
  5. minimize(): the gradients and         AutoGraph, GradientTape (graph_mnist.today)
     the training step, run once        and where to look next: TensorBoard, GraphDef

`graph-mnist-explain` is `python -m graph_mnist.explain`: the same program.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import collections
import json
import os
import statistics
import time

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from graph_mnist import costs
from graph_mnist import data
from graph_mnist import rewrite
from graph_mnist import steps
from graph_mnist import talk
from graph_mnist import today
from graph_mnist import training_graph
from graph_mnist.errors import UserError

v1 = tf.compat.v1


def _describe(tensor):
    shape = tensor.shape.as_list() if tensor.shape.rank is not None else None
    return {'name': tensor.name, 'shape': shape, 'dtype': tensor.dtype.name}


def placeholders_needed(fetch):
    """The placeholders `fetch` depends on, found by walking the graph backwards."""
    op = fetch if isinstance(fetch, tf.Operation) else fetch.op
    seen, stack, found = set(), [op], set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type in ('Placeholder', 'PlaceholderWithDefault'):
            found.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return sorted(found)


def kind_of(op):
    """What minimize() added an operation for."""
    if op.name.startswith('gradients'):
        return 'gradients (reverse-mode differentiation of the loss)'
    if op.type in ('VariableV2', 'VarHandleOp'):
        return 'optimizer slots and state (variables)'
    if op.type.startswith(('Apply', 'ResourceApply')) or op.type in ('Assign', 'AssignVariableOp'):
        return 'updates (apply the gradients, assign)'
    return 'other (initial values, reads, bookkeeping)'


def observe(model, batch, loss='stable', seed=0, workdir=None):
    """Builds `model`, then observes it step by step; returns a JSON-ready dict.

    batch: (images, labels) to run on, e.g. the first training batch of MNIST.
    workdir: where the graph is written for TensorBoard and as GraphDef text.
    """
    g = training_graph.build(model, loss=loss, seed=seed)
    graph, ops = g.graph, g.graph.get_operations()
    out = {'model': model, 'loss': loss}

    # 1. Building computes nothing.
    symbols = {'X': g.X, 'Y_': g.Y_, 'step': g.step, 'pkeep': g.pkeep,
               'Ylogits': g.Ylogits, 'Y': g.Y, 'cross_entropy': g.cross_entropy,
               'accuracy': g.accuracy}
    try:
        g.Ylogits.numpy()
        no_value = None
    except (AttributeError, NotImplementedError) as e:
        no_value = f'{type(e).__name__}: {e}'
    out['built'] = {
        'tensors': {k: _describe(t) for k, t in symbols.items()},
        'operations_before_minimize': g.minimize_ops.start,
        'is_symbolic': all(isinstance(t, tf.Tensor) and not hasattr(t, '_numpy')
                           for t in symbols.values()),
        'asking_for_a_value': no_value,
    }

    # 2. What each value needs.
    fetches = {'accuracy': g.accuracy, 'cross_entropy': g.cross_entropy,
               'train_step': g.train_step}
    needs = {name: placeholders_needed(f) for name, f in fetches.items()}
    X, Y_ = batch
    with v1.Session(graph=graph, config=g.config) as sess:
        sess.run(g.init)
        try:
            sess.run(g.accuracy, {g.X: X, g.pkeep: 1.0})  # the labels Y_ left out on purpose
            missing = None
        except tf.errors.InvalidArgumentError as e:
            lines = [line.strip() for line in e.message.splitlines() if line.strip()]
            said = [line for line in lines if 'must feed' in line] or lines[-1:]
            missing = {'fetched': 'accuracy', 'fed': ['X', 'pkeep'], 'left_out': 'Y_',
                       'error': type(e).__name__, 'message': said[0]}
    out['needs'] = {'placeholders': needs, 'missing_feed': missing}

    # 3. What minimize() added.
    added = ops[g.minimize_ops.start:g.minimize_ops.stop]
    with graph.as_default():
        variables = v1.trainable_variables()
    out['minimize'] = {
        'optimizer': g.spec.optimizer.__name__,
        'operations_before': g.minimize_ops.start,
        'operations_after': g.minimize_ops.stop,
        'added_by_kind': dict(collections.Counter(kind_of(op) for op in added).most_common()),
        'parameters': {v.name: {'shape': v.shape.as_list(), 'size': v.shape.num_elements()}
                       for v in variables},
        'trainable_parameters': g.parameters,
    }

    # 4. Running it: one step on a real batch.
    run_feed = {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: 0}
    with graph.as_default():  # what the network creates, in order (no optimizer slots)
        created = set(op.name for op in ops[:g.minimize_ops.start])
        network_variables = [v for v in v1.global_variables() if v.op.name in created]
        averages = [v for v in network_variables if 'ExponentialMovingAverage' in v.op.name]
    with v1.Session(graph=graph, config=g.config) as sess:
        sess.run(g.init)
        before_values = sess.run(variables)
        averages_start = sess.run(averages)
        loss_before = sess.run(g.cross_entropy, run_feed)
        sess.run(g.accuracy, g.test_feed(X, Y_))
        averages_after_evaluations = sess.run(averages)
        sess.run(g.train_step, {g.X: X, g.Y_: Y_, g.pkeep: g.spec.pkeep, g.step: 0})
        logits_graph, loss_after = sess.run([g.Ylogits, g.cross_entropy], run_feed)
        after_values = sess.run(variables)
        network_values = sess.run(network_variables)
        averages_after_step = sess.run(averages)
    out['run'] = {
        'batch': list(X.shape),
        'loss_before': float(loss_before), 'loss_after': float(loss_after),
        'changed': {v.name: float(np.abs(a - b).max())
                    for v, a, b in zip(variables, after_values, before_values)},
    }
    if averages:  # batch norm: the update of the moving averages is an op of its own,
        # attached to the training step; nothing else runs it
        def moved(values):
            return sum(not np.array_equal(a, b) for a, b in zip(averages_start, values))

        out['moving_averages'] = {
            'variables': [v.op.name for v in averages],
            'update_ops': [op.name for op in graph.get_collection(v1.GraphKeys.UPDATE_OPS)],
            'moved_by_evaluations': moved(averages_after_evaluations),
            'moved_by_the_training_step': moved(averages_after_step),
            'first_mean_before': [round(float(x), 4) for x in averages_start[0][:3]],
            'first_mean_after': [round(float(x), 4) for x in averages_after_step[0][:3]],
        }

    # 5. Eager, side by side: the same network function, run eagerly with the weights the
    # Session holds after that step (each tf.Variable it creates is given their value).
    trained = iter(network_values)

    def same_weights(next_creator, **kwargs):
        kwargs['initial_value'] = next(trained)
        return next_creator(**kwargs)

    try:
        with tf.variable_creator_scope(same_weights):
            # batch norm in training mode (tst False), as the Session ran it
            logits_eager = g.spec.logits(tf.constant(X), 1.0, tst=False)
    except TypeError as e:  # batch norm: averages of tensors exist only in a graph
        out['eager'] = {'executing_eagerly': tf.executing_eagerly(), 'refused': str(e)}
    else:
        out['eager'] = {
            'executing_eagerly': tf.executing_eagerly(),
            'type': type(logits_eager).__name__,
            'has_value_at_once': hasattr(logits_eager, 'numpy'),
            'first_logits': np.round(logits_eager.numpy()[0], 4).tolist(),
            'first_logits_graph': np.round(logits_graph[0], 4).tolist(),
            'max_abs_difference': float(np.abs(logits_eager.numpy() - logits_graph).max()),
        }

    # 6. Where to look next.
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with graph.as_default():  # FileWriter is TF1 API: it wants its graph as default
            v1.summary.FileWriter(workdir, graph).close()
        tf.io.write_graph(graph.as_graph_def(), workdir, 'graph.pbtxt', as_text=True)
        out['written'] = {'tensorboard_logdir': workdir,
                          'graphdef_text': os.path.join(workdir, 'graph.pbtxt'),
                          'command': f'tensorboard --logdir {workdir}'}
    return out


def observe_loop(model, images, labels, steps=50, repeats=5, seed=0):
    """What a Session.run costs beside a training step's arithmetic, timed here: the
    talk's loop (one Session.run with its feed_dict per step) against the loop moved
    into the graph (`steps` steps in one Session.run, the images held in the graph), and
    a Session.run that computes next to nothing (the learning rate). Medians of
    `repeats` timings, interleaved; per step."""
    g = training_graph.build(model, seed=seed, loop=True)
    loop = g.loop
    sess = v1.Session(graph=g.graph, config=g.config)
    try:
        sess.run(g.init)
        sess.run(loop.load, {loop.images: images, loop.labels: labels})  # once
        order = np.random.default_rng(seed).permutation(len(images))
        batches = order[:steps * 100].reshape(steps, 100) % len(images)

        def literal():
            for i, chosen in enumerate(batches):
                sess.run(g.train_step, {g.X: images[chosen], g.Y_: labels[chosen],
                                        g.step: i, g.pkeep: g.spec.pkeep})

        def in_graph():
            sess.run(loop.cross_entropy, {loop.steps: steps, loop.first: 0,
                                          loop.orders: batches[None], g.pkeep: g.spec.pkeep})

        def nothing():
            for i in range(steps):
                sess.run(g.lr, {g.step: i})

        with g.graph.as_default():
            counter = [v for v in v1.global_variables() if v.op.name == 'beta1_power']
        before = sess.run(counter)
        in_graph()  # also the first run of each: not timed
        after = sess.run(counter)
        sess.run(g.train_step, {g.X: images[:100], g.Y_: labels[:100], g.step: 0,
                                g.pkeep: g.spec.pkeep})  # one update: Adam's beta1
        one_more = sess.run(counter)
        literal()
        nothing()
        timed = {'literal': [], 'in_graph': [], 'nothing': []}
        for _ in range(repeats):
            for name, fn in (('literal', literal), ('in_graph', in_graph),
                             ('nothing', nothing)):
                start = time.perf_counter()
                fn()
                timed[name].append((time.perf_counter() - start) / steps)
    finally:
        sess.close()
    per_step = {name: statistics.median(t) * 1e6 for name, t in timed.items()}
    out = {'steps_per_run': steps, 'literal_us': per_step['literal'],
           'in_graph_us': per_step['in_graph'], 'call_us': per_step['nothing'],
           'outside_arithmetic': 1 - per_step['in_graph'] / per_step['literal'],
           'timings_s_per_step': timed}
    if counter:  # Adam counts its updates in beta1_power, times beta1 per update
        beta1 = one_more[0] / after[0]
        out['updates_in_one_run'] = round(float(np.log(after[0] / before[0]) / np.log(beta1)))
    return out


# --------------------------------------------------------------------------- the lesson


def _shape(shape):
    return 'unknown' if shape is None else '[' + ', '.join('?' if d is None else str(d)
                                                          for d in shape) + ']'


TITLES = {  # the lesson's chapters, in the order of its ideas
    'built': 'Building the graph computes nothing.',
    'needs': 'A value exists only when a Session runs a node with its placeholders fed.',
    'state': 'The state lives in the Session.',
    'runs': 'A Session.run runs only what its fetches need.',
    'gradients': 'minimize() added the gradients and the training step.',
    'grappler': 'TensorFlow rewrites the graph before running it (Grappler).',
    'costs': 'What graphs cost: errors, values, retracing, growth, debugging.',
    'loop': 'The loop moved into the graph.',
    'today': "Today's answer: eager execution, tf.function and AutoGraph, GradientTape.",
}


def chapters(o):
    """[(title, lines)] of the observations, in the lesson's order (TITLES)."""
    b, n, m, r, e = o['built'], o['needs'], o['minimize'], o['run'], o['eager']
    later = today.chapters(o['today'], o['model']) if 'today' in o else {}
    found = {}
    found['built'] = ['   Every tf.* call added a node to a graph. What came back are symbolic '
                      'tensors:']
    found['built'] += [f"     {key:14} {t['name']:22} shape {_shape(t['shape']):18} "
                       f"{t['dtype']}" for key, t in b['tensors'].items()]
    found['built'] += [f"   The graph holds {b['operations_before_minimize']} operations so "
                       "far; '?' is the batch size, unknown until a batch is fed.",
                       f"   Asking Ylogits for its value: {b['asking_for_a_value']}"]
    found['needs'] = [f"     {fetch:14} needs {', '.join(needed)}"
                      for fetch, needed in n['placeholders'].items()]
    if n['missing_feed']:
        found['needs'] += [
            f"   Running accuracy with the labels Y_ left out, TensorFlow refuses "
            f"({n['missing_feed']['error']}):", f"     {n['missing_feed']['message']}",
            '   Accuracy compares predictions with the correct answers: no answers, no value.']
    found['state'], found['runs'] = later.get('state'), later.get('runs')
    grads = [f"   {m['optimizer']}.minimize(cross_entropy): reverse-mode automatic "
             'differentiation, each op of the forward pass answered by its registered '
             'gradient op, then the update;',
             f"   operations: {m['operations_before']} before, {m['operations_after']} "
             f"after (+{m['operations_after'] - m['operations_before']})"]
    grads += [f'     {count:5}  {kind}' for kind, count in m['added_by_kind'].items()]
    grads.append('   What the training adjusts, the trainable parameters:')
    grads += [f"     {name:16} {_shape(p['shape']):18} {p['size']:>9,}"
              for name, p in m['parameters'].items()]
    grads.append(f"     {'total':16} {'':18} {m['trainable_parameters']:>9,}")
    changed = [k for k, v in r['changed'].items() if v > 0]
    grads += [f"   One Session.run(train_step) on a batch of {r['batch'][0]} images: "
              f"cross-entropy {r['loss_before']:.4f} before, {r['loss_after']:.4f} after;",
              f"   variables changed: {len(changed)} of {len(r['changed'])} (largest change "
              f"{max(r['changed'].values()):.2e})"]
    if 'moving_averages' in o:
        a = o['moving_averages']
        grads += [f"   Batch norm: {len(a['variables'])} moving averages (a mean and a "
                  'variance per normalised layer), updated by their own ops',
                  f"     {', '.join(a['update_ops'])}",
                  '   which the training step depends on (tf.control_dependencies). '
                  'Evaluating the accuracy',
                  f"   on the test feed moved {a['moved_by_evaluations']} of them; one "
                  f"training step moved {a['moved_by_the_training_step']}: the first "
                  f"mean went from {a['first_mean_before']} to {a['first_mean_after']}.",
                  '   Nothing updates until a Session runs a node that needs the update.']
    found['gradients'] = grads
    found['grappler'] = later.get('grappler')
    found['costs'] = costs.chapter(o['costs']) if 'costs' in o else None
    if 'loop' in o:
        p = o['loop']
        found['loop'] = [f"   {p['steps_per_run']} training steps in one Session.run."]
        if 'updates_in_one_run' in p:
            found['loop'].append(f"   One Session.run of the loop, and the optimizer counted "
                                 f"{p['updates_in_one_run']} updates.")
        found['loop'] += [
            f"   per step, timed here: the talk's loop {p['literal_us']:,.0f} us, the loop in "
            f"the graph {p['in_graph_us']:,.0f} us;",
            f"   a Session.run that computes next to nothing: {p['call_us']:,.0f} us.",
            f"   So {p['outside_arithmetic']:.0%} of the talk's step is spent outside the "
            "step's arithmetic: the call, its feed_dict,",
            '   the batch copied in. Deferred execution carried to its end: the whole loop '
            'is a graph, Python waits for it.']
    found['today'] = _eager(e) + (
        ['   tf.function traces Python into a graph:'] + later['function']
        + ['   GradientTape records what eager code did and differentiates it:']
        + later['tape'] if later else [])
    return [(TITLES[key], found[key]) for key in TITLES if found.get(key)]


def _eager(e):
    """The same network function eagerly, with the weights after the step."""
    lines = ['   The same network function in TensorFlow 2 eager mode, with the weights after '
             'the step of chapter 5:']
    if 'refused' in e:
        return lines + [f"   TensorFlow refuses: {e['refused']}",
                        '   The moving averages of batch norm are graph-only TensorFlow 1 '
                        'code: an update op that waits for a',
                        '   Session has no meaning when every line runs at once.']

    def first(values):
        return '[' + ', '.join(f'{v:.4f}' for v in values[:4]) + ', ...]'

    return lines + [
        f"   an {e['type']} with its value at once: logits of the first image "
        f"{first(e['first_logits'])}",
        f"   the Session gave{' ' * 30}{first(e['first_logits_graph'])}"
        f"; largest difference over the batch {e['max_abs_difference']:.1e}",
        '   Eager computes each line as it runs; the graph waits, and in exchange '
        'TensorFlow sees the whole computation first.']


def lesson(o):
    """The observations as a short text lesson, its chapters numbered in their order."""
    lines = [f"Deferred execution, observed on the talk's `{o['model']}` network", '']
    for number, (title, body) in enumerate(chapters(o), 1):
        lines += [f'{number}. {title}', *body, '']
    if 'written' in o:
        w = o['written']
        lines += ['Where to look next:',
                  f"   the graph as GraphDef text: {w['graphdef_text']}",
                  f"   the graph in TensorBoard:   {w['command']}   (tab 'Graphs')"]
    return '\n'.join(lines).rstrip('\n')


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum('model', 'softmax', list(talk.NETWORKS), 'Which network to explain.')
    flags.DEFINE_enum('loss', 'stable', list(training_graph.LOSSES), 'The cross-entropy to build.')
    flags.DEFINE_enum('format', 'text', ['text', 'json'], 'A lesson to read, or JSON.')
    flags.DEFINE_bool('code', False, 'Print instead the network of --model as models.py '
                      'writes it, its diff from the talk\'s previous step and the settings '
                      'that change (graph_mnist.steps); with --bias or --batch_norm, the '
                      'lines that experiment writes otherwise (graph_mnist.rewrite).')
    flags.DEFINE_enum('bias', None, list(rewrite.BIAS), 'With --code: the biases\' lines.')
    flags.DEFINE_enum('batch_norm', None, list(rewrite.BATCH_NORM), 'With --code: batch '
                      'norm\'s lines.')
    flags.DEFINE_string('workdir', None,
                        'Where to write the graph (default runs/explain-<model>).')
    flags.DEFINE_string('data_dir', None, 'MNIST directory (default: the per-user cache).')
    flags.DEFINE_integer('loop_steps', 50, 'Steps per Session.run of the loop moved into the '
                         'graph, timed against the talk\'s loop (0: leave that part out).',
                         lower_bound=0)


def main(argv):
    del argv
    if FLAGS.code and (FLAGS.bias or FLAGS.batch_norm):  # an experiment's lines
        print(steps.rewritten(FLAGS.model, FLAGS.bias or 'plus', FLAGS.batch_norm or
                              'moments') or f'{FLAGS.model}: no line of it changes', end='\n')
        return 0
    if FLAGS.code:  # the step's code beside the step before's: no graph, no data
        print(steps.step(FLAGS.model), end='')
        return 0
    mnist = data.load(FLAGS.data_dir, log=logging.info)
    batch = data.Batches(mnist.train_images, mnist.train_labels, 100, seed=0)(0)
    workdir = FLAGS.workdir or os.path.join('runs', f'explain-{FLAGS.model}')
    try:
        observations = observe(FLAGS.model, batch, FLAGS.loss, workdir=workdir)
    except OSError as e:
        raise UserError(f'cannot write into {workdir}: {e.strerror}') from None
    if FLAGS.loop_steps:
        observations['loop'] = observe_loop(FLAGS.model, mnist.train_images,
                                            mnist.train_labels, steps=FLAGS.loop_steps)
    observations['today'] = today.observe(FLAGS.model, batch)
    observations['costs'] = costs.observe()
    print(json.dumps(observations, indent=1) if FLAGS.format == 'json' else lesson(observations))
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
