"""Chapters of the lesson on deferred execution (graph_mnist.explain orders them): what
the Session holds, what it runs, how TensorFlow rewrites the graph, and what replaced it,
tf.function and GradientTape; each point observed on the real objects, never typed in.

    observe(model, batch)  ->  a JSON-ready dict;   chapters(observations)  ->  lines
"""

import collections

import numpy as np
import tensorflow as tf

from graph_mnist import talk
from graph_mnist import training_graph
from graph_mnist.styles import eager

v1 = tf.compat.v1

# what a network computes, for comparing two graphs of it (not reads, identities, shapes)
ARITHMETIC = ('Conv2D', 'MatMul', 'BiasAdd', 'AddV2', 'Relu', 'Sigmoid', 'Softmax',
              'LogSoftmax', 'Reshape')


def _what_it_says(error):
    """The line of a TensorFlow error that says what happened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if 'uninitialized' in line or 'not initialized' in line
            or 'Could not find' in line]
    return (said or lines or [type(error).__name__])[0][:160]


def _executed(sess, fetches, feed):
    """How many operations Session.run executed for `fetches` (from its step stats)."""
    metadata = v1.RunMetadata()
    sess.run(fetches, feed, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
             run_metadata=metadata)
    return sum(len(device.node_stats) for device in metadata.step_stats.dev_stats)


def observe_session(model, batch, seed=0):
    """7 and 8: the state lives in a Session; a Session.run runs what its fetches need."""
    X, Y_ = batch
    g = training_graph.build(model, seed=seed)
    W1 = g.weights[0]
    feed = {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: 0}
    out = {}
    with v1.Session(graph=g.graph, config=g.config) as first, \
            v1.Session(graph=g.graph, config=g.config) as second:
        try:
            first.run(W1)
            out['before_init'] = None
        except tf.errors.FailedPreconditionError as e:
            out['before_init'] = {'error': type(e).__name__, 'message': _what_it_says(e.message)}
        first.run(g.init)
        second.run(g.init)
        start = second.run(W1)
        first.run(g.train_step, {**feed, g.pkeep: g.spec.pkeep})
        out['two_sessions'] = {
            'variable': W1.op.name,
            'changed_in_the_first': float(np.abs(first.run(W1) - start).max()),
            'changed_in_the_second': float(np.abs(second.run(W1) - start).max()),
        }
        counts = {'accuracy': _executed(second, g.accuracy, feed),
                  'cross_entropy': _executed(second, g.cross_entropy, feed),
                  'accuracy and cross_entropy together':
                      _executed(second, [g.accuracy, g.cross_entropy], feed),
                  'train_step': _executed(second, g.train_step, feed)}
    out['executed'] = {'in_the_graph': len(g.graph.get_operations()), 'per_fetch': counts}
    return out


def observe_grappler(batch, model='five_layers_relu'):
    """9: the graph TensorFlow runs is not the graph you wrote: Grappler rewrites the
    talk's literal log(softmax(...)) into one LogSoftmax (graph_mnist.training_graph.session_config
    turns that off for --loss=literal, so that the literal loss stays literal)."""
    X, Y_ = batch
    g = training_graph.build(model, loss='literal')
    written = collections.Counter(op.type for op in g.graph.get_operations())
    ran = {}
    for name, config, fetch in (('default', v1.ConfigProto(), g.cross_entropy),
                                ('literal', g.config, g.cross_entropy),
                                ('training', v1.ConfigProto(), g.train_step)):
        metadata = v1.RunMetadata()
        with v1.Session(graph=g.graph, config=config) as sess:
            sess.run(g.init)
            sess.run(fetch, {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: 0},
                     options=v1.RunOptions(output_partition_graphs=True),
                     run_metadata=metadata)
        ran[name] = collections.Counter(node.op for graph in metadata.partition_graphs
                                        for node in graph.node)
    kinds = ('Log', 'LogSoftmax')
    bfloat16 = observe_bfloat16(batch, model) if training_graph.bfloat16_support() else None
    softmax = next(op for op in g.graph.get_operations() if op.type == 'Log').inputs[0].op
    return {'model': model, 'written': {k: written[k] for k in ('Log', 'Softmax', 'LogSoftmax')},
            'run_by_default': {k: ran['default'][k] for k in kinds},
            'run_with_rewrites_off': {k: ran['literal'][k] for k in kinds},
            'run_in_a_training_step': {k: ran['training'][k] for k in kinds},
            'softmax_readers': sorted(op.type for op in softmax.outputs[0].consumers()),
            'bfloat16': bfloat16}


def observe_bfloat16(batch, model='five_layers_relu'):
    """--precision=bfloat16: the same graph, and what a training step ran after Grappler
    rewrote it: its matrix multiplications in bfloat16, casts around them."""
    X, Y_ = batch
    g = training_graph.build(model, precision='bfloat16')
    metadata = v1.RunMetadata()
    with v1.Session(graph=g.graph, config=g.config) as sess:
        sess.run(g.init)
        sess.run(g.train_step, {g.X: X, g.Y_: Y_, g.pkeep: 1.0, g.step: 0},
                 options=v1.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    nodes = [node for graph in metadata.partition_graphs for node in graph.node]
    bf16 = tf.bfloat16.as_datatype_enum
    matmuls = [node for node in nodes if 'MatMul' in node.op]
    return {'written_matmuls': sum(op.type == 'MatMul' for op in g.graph.get_operations()),
            'ran_matmuls': len(matmuls),
            'matmuls_in_bfloat16': sum(node.attr['T'].type == bf16 for node in matmuls),
            'casts_to_bfloat16': sum(node.op == 'Cast' and node.attr['DstT'].type == bf16
                                     for node in nodes)}


def observe_function(model, batch, seed=0):
    """10: tf.function runs the Python once per trace; a new shape traces again; AutoGraph
    turns a Python `if` on a tensor into a graph conditional; and the traced graph of the
    network does the same arithmetic as the talk's."""
    traces = []

    @tf.function
    def forward(X):
        traces.append(X.shape.as_list())  # Python: runs while tracing, not when called
        return tf.reduce_sum(X)

    X = tf.constant(batch[0])
    for _ in range(3):
        forward(X)
    after_three_calls = len(traces)
    forward(X[:50])  # another batch size: another trace
    after_a_new_shape = len(traces)

    @tf.function
    def clip(x):
        if tf.reduce_sum(x) > 0:  # a Python if on a tensor: AutoGraph makes it a cond
            return x
        return -x

    conditional = [op.type for op in clip.get_concrete_function(
        tf.TensorSpec([None])).graph.get_operations() if 'If' in op.type]

    net = eager.FunctionNet(model, seed=seed)
    traced = tf.function(net.logits).get_concrete_function(tf.TensorSpec([None, 28, 28, 1]))
    g = training_graph.build(model, seed=seed)

    def arithmetic(output):
        """The operations `output` is computed from, counted by kind (the initial
        values' random ops a trace also records, unused, are left out)."""
        found, stack, seen = collections.Counter(), [output.op], set()
        while stack:
            op = stack.pop()
            if op.name not in seen:
                seen.add(op.name)
                found[op.type] += 1
                stack.extend(t.op for t in op.inputs)
        return {k: found[k] for k in ARITHMETIC if found[k]}

    return {'traces_after_three_calls': after_three_calls,
            'traces_after_a_new_shape': after_a_new_shape,
            'traced_shapes': traces,
            'autograph_conditional': conditional,
            'traced_network': arithmetic(traced.outputs[0]),
            'talks_network': arithmetic(g.Ylogits)}


def observe_tape(model, batch, seed=0):
    """11: GradientTape records what eager code did and differentiates it: the same
    gradients as minimize's, differentiated in the graph before any run."""
    X, Y_ = batch
    spec, initial = talk.NETWORKS[model], eager.initial_values(model, seed)
    values = iter(initial.values())

    def from_the_seed(next_creator, **kwargs):  # the values the graph of this seed makes
        kwargs['initial_value'] = next(values)
        return next_creator(**kwargs)

    graph = tf.Graph()
    with graph.as_default():  # the talk's way: the network, then its gradient ops
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        labels = v1.placeholder(tf.float32, [None, 10])
        with tf.variable_creator_scope(from_the_seed):
            loss = training_graph.cross_entropy(spec.logits(images, 1.0), labels)
        variables = v1.trainable_variables()
        formal = v1.gradients(loss, variables)
        init = v1.global_variables_initializer()
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        in_graph = sess.run(formal, {images: X, labels: Y_})
    net = eager.FunctionNet(model, seed=seed)  # the same initial values
    by_name = dict(zip(net.names, net.variables))
    with tf.GradientTape() as tape:
        cross_entropy = training_graph.cross_entropy(net.logits(tf.constant(X)), tf.constant(Y_))
    ordered = [by_name[v.op.name] for v in variables]
    recorded = tape.gradient(cross_entropy, ordered)
    return {'variables': len(ordered),
            'largest_gradient': float(max(np.abs(a).max() for a in in_graph)),
            'max_abs_difference': float(max(np.abs(a - b.numpy()).max()
                                            for a, b in zip(in_graph, recorded)))}


def observe(model, batch, seed=0):
    if talk.NETWORKS[model].batch_norm:
        return {'refused': f'{model}: batch norm has no TensorFlow 2 twin here '
                           '(its moving averages are graph collections)'}
    return {'session': observe_session(model, batch, seed),
            'grappler': observe_grappler(batch),
            'function': observe_function(model, batch, seed),
            'tape': observe_tape(model, batch, seed)}


def chapters(o, model):
    """{chapter: its lines} of the lesson's chapters observed here (graph_mnist.explain
    orders and numbers them): the Session's state, what a run runs, Grappler, tf.function
    and the tape."""
    if 'refused' in o:
        return {name: [f"   {o['refused']}."] for name in
                ('state', 'runs', 'grappler', 'function', 'tape')}
    s, gr, f, t = o['session'], o['grappler'], o['function'], o['tape']
    state = []
    if s['before_init']:
        state.append(f"   Reading a variable before sess.run(init): "
                     f"{s['before_init']['error']}: {s['before_init']['message']}")
    two = s['two_sessions']
    state += [f"   Two Sessions of one graph, one training step in the first: "
              f"{two['variable']} moved by {two['changed_in_the_first']:.2e} there, "
              f"by {two['changed_in_the_second']:g} in the second.",
              '   The graph is a program; each Session holds its own values.']
    e = s['executed']
    runs = [f"   Operations executed, of {e['in_the_graph']} in the graph:"]
    runs += [f'     {fetch:38} {count:5}' for fetch, count in e['per_fetch'].items()]
    runs.append('   Fetched together, accuracy and cross-entropy share the network\'s '
                'forward pass.')
    training = gr['run_in_a_training_step']
    grappler = [
        f"   On {gr['model']} with the talk's literal loss, log(softmax(...)) as written: "
        f"{gr['written']}",
        f"   run alone, by default: {gr['run_by_default']}: log(softmax) became the stable "
        'LogSoftmax, unasked;' if gr['run_by_default'].get('LogSoftmax') else
        f"   run alone, by default: {gr['run_by_default']}: nothing rewritten;",
        f"   with the rewrites off, as --loss=literal runs it: {gr['run_with_rewrites_off']};",
        f"   in a training step: {training}: "
        + ('not rewritten: the softmax has other readers there (its gradient reads it; '
           f"readers {gr['softmax_readers']}), and the rewrite needs Log to be its only one."
           if training.get('Log') else 'rewritten there too.')]
    if gr.get('bfloat16'):
        b = gr['bfloat16']
        grappler.append(
            f"   Asked for bfloat16 (--precision=bfloat16), the same graph ({b['written_matmuls']}"
            f" MatMuls written in float32) ran {b['matmuls_in_bfloat16']} of its "
            f"{b['ran_matmuls']} matrix multiplications in bfloat16, with "
            f"{b['casts_to_bfloat16']} casts to bfloat16 added.")
    function = [
        f"   A Python line inside it ran {f['traces_after_three_calls']} time(s) for three "
        f"calls, {f['traces_after_a_new_shape']} after a call with another batch size "
        f"(shapes {f['traced_shapes']}).",
        '   AutoGraph turned `if tf.reduce_sum(x) > 0:` into '
        f"{f['autograph_conditional']}.",
        f"   The traced {model}: {f['traced_network']}",
        f"   the talk's graph:   {f['talks_network']}"]
    tape = [
        f"   On {t['variables']} variables, the largest gradient {t['largest_gradient']:.3g}; "
        "the tape's gradients differ from minimize's by at most "
        f"{t['max_abs_difference']:.1e}.",
        '   The tape records the operations as they run: it needs no graph built before '
        'running. What the graph still buys: a',
        '   whole computation TensorFlow can rewrite (chapter 6), place on devices and '
        'servers, and save as a SavedModel that',
        '   runs without Python; tf.function gives TensorFlow 2 code the same, while the '
        'Python around it stays eager.']
    return {'state': state, 'runs': runs, 'grappler': grappler, 'function': function,
            'tape': tape}


# --------------------------------------------------------------- three loops, side by side


def _without_docstring(function):
    """A function's or class's source, its docstring left out."""
    import ast
    import inspect
    import textwrap
    lines = textwrap.dedent(inspect.getsource(function)).splitlines()
    node = ast.parse('\n'.join(lines)).body[0]
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        blank = first.end_lineno < len(lines) and not lines[first.end_lineno].strip()
        del lines[first.lineno - 1:first.end_lineno + blank]
    return '\n'.join(lines)


def three_loops():
    """{style: the source of its training loop}, as the package runs it: the talk's loop
    over Session.run (graph), a Python loop over a tf.function step (function), Keras's
    fit with a callback keeping the books (keras)."""
    from graph_mnist import training
    return {'graph': _without_docstring(training.loop),
            'function': _without_docstring(eager.train_function),
            'keras': _without_docstring(eager.train_keras) + '\n\n\n'
            + _without_docstring(eager.KeepTheBooks)}


def three_loops_html():
    """three_loops() as an HTML table, one column a style (docs/styles.md prints it, the
    notebook shows it)."""
    import html
    cells = ''.join(f'<td valign="top"><pre>{html.escape(source)}</pre></td>'
                    for source in three_loops().values())
    heads = ''.join(f'<th><code>--style={style}</code></th>' for style in three_loops())
    return f'<table>\n<tr>{heads}</tr>\n<tr>{cells}</tr>\n</table>'
