"""Each step of the talk as this package writes it, beside the step before: the network's
code from graph_mnist.models, its unified diff from the previous step's, and the settings
that change. The talk's published code kept one file per step so that a reader could
diff two of them; this is that diff, made from the code that runs.

    graph-mnist-explain --code --model=five_layers_relu
    graph-mnist-explain --code --model=conv --bias=bias_add   # an experiment's lines
"""

import difflib
import inspect

from graph_mnist import models
from graph_mnist import rewrite
from graph_mnist import talk


def previous(name):
    """The step before `name`: the talk's previous step, or for a batch-norm network the
    talk's network it improves upon; None for the first."""
    spec = talk.NETWORKS[name]
    if spec.batch_norm:
        return spec.plain
    order = talk.TALK.index(name)
    return talk.TALK[order - 1] if order else None


def parts(name):
    """The functions of models.py that make step `name`'s network: its own, and the
    helpers it calls (the five dense layers' `_five_layers`), in the file's order."""
    function = talk.NETWORKS[name].function
    called = [getattr(models, n) for n in function.__code__.co_names
              if n.startswith('_') and inspect.isfunction(getattr(models, n, None))]
    return sorted({function, *called}, key=lambda f: f.__code__.co_firstlineno)


def code(name):
    """The network of step `name` as models.py writes it."""
    return '\n\n'.join(inspect.getsource(f).rstrip('\n') for f in parts(name)) + '\n'


def rewritten(name, bias='plus', batch_norm='moments'):
    """What --bias and --batch_norm change in step `name`'s network: the unified diff of
    its functions as models.py writes them and as graph_mnist.rewrite does (both printed
    by ast.unparse, so comments and line breaks aside); '' when nothing changes."""
    literal = [rewrite.source(f) for f in parts(name)]
    written = [rewrite.source(f, bias, batch_norm) for f in parts(name)]
    return ''.join(difflib.unified_diff(
        '\n\n'.join(literal).splitlines(keepends=True),
        '\n\n'.join(written).splitlines(keepends=True),
        fromfile=f'models.py, {name}', tofile=f'{name}, --bias={bias} --batch_norm={batch_norm}',
        n=1))


def settings(name):
    """{setting: value} of step `name`, as words: what its training changes."""
    spec = talk.NETWORKS[name]
    return {'optimizer': spec.optimizer.__name__, 'learning rate': str(spec.learning_rate),
            'pkeep (dropout)': f'{spec.pkeep:g}', 'steps': f'{spec.iterations:,}'}


def diff(name):
    """The unified diff of step `name`'s code from the step before's ('' when the same)."""
    before = previous(name)
    if before is None:
        return ''
    return ''.join(difflib.unified_diff(
        code(before).splitlines(keepends=True), code(name).splitlines(keepends=True),
        fromfile=f'models.py, {before}', tofile=f'models.py, {name}', n=2))


def step(name):
    """The text `graph-mnist-explain --code` prints for step `name`."""
    spec, before = talk.NETWORKS[name], previous(name)
    lines = [f'{name}: {spec.talk.change or "beyond the talk"}']
    if spec.talk.why:
        lines.append(f'  the talk: {spec.talk.why}')
    lines += ['', f'# the network, graph_mnist/models.py ({spec.function.__name__})', '',
              code(name).rstrip('\n')]
    if before is None:
        lines += ['', 'The first step: nothing before it.']
        return '\n'.join(lines) + '\n'
    changed = diff(name)
    lines += ['', f'# what changed in the code from {before}', '']
    lines.append(changed.rstrip('\n') if changed else
                 f'Nothing: {before} runs the same function ({spec.function.__name__}); '
                 'what changes is a setting, below.')
    was, now = settings(before), settings(name)
    moved = [f'  {key}: {was[key]} -> {now[key]}' for key in now if now[key] != was[key]]
    lines += ['', f'# what changed in the settings from {before}', '']
    lines += moved or ['  nothing']
    if spec.has_dropout and spec.pkeep == 1:
        lines.append(f'  (pkeep {spec.pkeep:g}: its dropout line keeps every neuron)')
    return '\n'.join(lines) + '\n'
