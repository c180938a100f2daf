"""What deferred execution costs the programmer, observed (graph_mnist.explain's chapter
"what graphs cost"): each point run on small graphs of its own, never typed in.

    observe()  ->  a JSON-ready dict;   chapter(observations)  ->  lines of text
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def error_far_from_its_line():
    """A wrong shape is built without complaint and fails only when run: the error
    names the operation, not the Python line that is still being read."""
    graph = tf.Graph()
    with graph.as_default():
        X = v1.placeholder(tf.float32, [None, None], name='X')  # width unknown when built
        W = tf.Variable(tf.zeros([784, 10]), name='W')
        Y = tf.matmul(X, W, name='Y')
        init = v1.global_variables_initializer()
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        try:
            sess.run(Y, {X: np.zeros([2, 5], np.float32)})  # 5 pixels, not 784
        except tf.errors.InvalidArgumentError as e:
            lines = [line.strip() for line in e.message.splitlines() if line.strip()]
            said = [line for line in lines if 'incompatible' in line] or lines[-1:]
            return {'built': True, 'error_at_run': type(e).__name__,
                    'names_the_op': e.op is not None and e.op.name == 'Y',
                    'says_where_it_was_built': any('defined at' in line for line in lines),
                    'message': said[0][:140]}
    return {'built': True, 'error_at_run': None}


def values_only_when_run():
    """print() in graph code prints a symbol; tf.print is an op: it prints values when
    a Session runs it, and nothing when nothing runs it."""
    graph = tf.Graph()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'printed.txt')
        with graph.as_default():
            x = tf.constant([1.0, 2.0, 3.0], name='x')
            doubled = tf.multiply(x, 2.0, name='doubled')
            printing = tf.print('doubled:', doubled, output_stream=f'file://{path}')
        python_print = str(doubled)
        with v1.Session(graph=graph) as sess:
            sess.run(doubled)  # tf.print not fetched, not a dependency: it does not run
            before = open(path).read() if os.path.exists(path) else ''
            sess.run(printing)
            after = open(path).read()
    return {'python_print': python_print, 'tf_print_when_not_run': before.strip(),
            'tf_print_when_run': after.strip()}


def retracing():
    """A tf.function traces its Python once per new input signature: a Python number is
    part of the signature (one trace per value), a tensor is not, and `input_signature`
    fixes it once for all."""
    traces = {'python number': [], 'tensor': [], 'input_signature': []}

    @tf.function
    def scale_by_number(x, n):
        traces['python number'].append(n)
        return x * n

    @tf.function
    def scale_by_tensor(x, n):
        traces['tensor'].append(1)
        return x * n

    @tf.function(input_signature=[tf.TensorSpec([None]), tf.TensorSpec([])])
    def scale_fixed(x, n):
        traces['input_signature'].append(1)
        return x * n

    x = tf.ones([3])
    for n in (1.0, 2.0, 3.0):
        scale_by_number(x, n)
        scale_by_tensor(x, tf.constant(n))
        scale_fixed(x, tf.constant(n))
    scale_fixed(tf.ones([5]), tf.constant(1.0))  # another batch size: no new trace either
    return {'calls': 3, 'traces': {kind: len(made) for kind, made in traces.items()}}


def graph_grows_in_a_loop():
    """An op made inside the training loop adds to the graph at every step, silently;
    a finalized graph (training_graph.build finalizes ours) refuses it at once."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(1.0)
    sizes = []
    with v1.Session(graph=graph) as sess:
        for _ in range(3):
            with graph.as_default():
                sess.run(tf.add(x, 1.0))  # a new op each time round
            sizes.append(len(graph.get_operations()))
        graph.finalize()
        try:
            with graph.as_default():
                tf.add(x, 1.0)
            refused = None
        except RuntimeError as e:
            refused = str(e)
    return {'operations_after_each_step': sizes, 'finalized_refuses': refused}


def debugging_eagerly():
    """tf.config.run_functions_eagerly(True) runs a tf.function's Python at every call,
    so print and a debugger see values; it is process-wide, so this turns it back off."""
    calls = []

    @tf.function
    def step(x):
        calls.append(type(x).__name__)
        return x + 1

    step(tf.constant(1.0))
    step(tf.constant(2.0))
    traced = list(calls)
    calls.clear()
    tf.config.run_functions_eagerly(True)
    try:
        step(tf.constant(1.0))
        step(tf.constant(2.0))
    finally:
        tf.config.run_functions_eagerly(False)
    return {'python_ran_traced': len(traced), 'python_ran_eagerly': len(calls),
            'traced_sees': traced[0], 'eager_sees': calls[0]}


def observe():
    return {'error': error_far_from_its_line(), 'values': values_only_when_run(),
            'retracing': retracing(), 'growing': graph_grows_in_a_loop(),
            'eagerly': debugging_eagerly()}


def chapter(o):
    """The chapter's lines (its heading is the lesson's)."""
    e, v, r, g, d = o['error'], o['values'], o['retracing'], o['growing'], o['eagerly']
    t = r['traces']
    return [
        '   An error waits for the run: a matmul of a [?, ?] placeholder by a [784, 10] '
        'weight was built without complaint;',
        f"   fed 5 pixels, Session.run raised {e['error_at_run']} naming the op "
        f"{'Y' if e.get('names_the_op') else '?'}: {e.get('message', '')}",
        '   (it also says where the op was defined: the line that built it, long since run).'
        if e.get('says_where_it_was_built') else
        '   (nothing in it says which Python line built the op).',
        f"   Values are seen by running them: print(tensor) gives {v['python_print']};",
        f"   tf.print is an op: nothing while it was not run "
        f"({v['tf_print_when_not_run']!r}), then {v['tf_print_when_run']!r}.",
        f"   Retracing: {r['calls']} calls of a tf.function traced its Python "
        f"{t['python number']} times with a Python number argument, {t['tensor']} with a "
        'tensor,',
        f"   {t['input_signature']} with an input_signature (another batch size included): "
        "what styles/eager.py's measure uses.",
        f"   A graph grows silently: an op made inside the loop, operations after each step "
        f"{g['operations_after_each_step']};",
        f"   once finalized (as training_graph.build leaves ours): {g['finalized_refuses']}",
        f"   Debugging: a tf.function's Python ran {d['python_ran_traced']} time(s) for two "
        f"calls, seeing a {d['traced_sees']};",
        f"   with tf.config.run_functions_eagerly(True), {d['python_ran_eagerly']} times, "
        f"seeing an {d['eager_sees']} with its value.",
    ]
