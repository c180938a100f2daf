"""Prints README's Markdown tables: the networks as models.py defines them, or finished
runs beside the talk's numbers.

    python scripts/results_table.py --networks
    python scripts/results_table.py runs/latest results/talk_comparison/runs/*-seed0

Every figure comes from talk.NETWORKS (the layers read off each network's graph) or
from the runs' history.json files; nothing is typed in. tests/test_readme.py checks
that README.md holds the networks table exactly as printed here.
"""

from absl import app
from absl import flags

from graph_mnist import runs

FLAGS = flags.FLAGS


def networks_table(names, source='the talk says'):
    """One row per network: its layers, activation, dropout, batch norm, optimizer and
    learning rate, steps and the talk's (or the published code's) figure."""
    from graph_mnist import architecture
    from graph_mnist import talk
    lines = ['| `--model` | layers (input 28×28, output 10 softmax) | hidden activation | dropout '
             f'| optimizer, learning rate | steps | {source} |',
             '|---|---|---|---|---|---|---|']
    display = {'relu': 'ReLU', 'sigmoid': 'sigmoid'}
    for name in names:
        spec, layers = talk.NETWORKS[name], architecture.layers(name)
        shapes, activations, dropped = [], set(), []
        for layer in layers:
            normalised = ' BN' if layer.batch_norm else ''
            if layer.kind == 'conv':
                shapes.append(f'conv {layer.patch}×{layer.patch}→{layer.n_out}'
                              + (f' /{layer.stride}' if layer.stride > 1 else '') + normalised)
            elif layer.kind == 'dense':
                if not shapes or shapes[-1].startswith('conv'):
                    shapes.append(str(layer.n_in))
                shapes.append(str(layer.n_out) + normalised)
            else:
                dropped.append(shapes[-1])
            if layer.activation:
                activations.add(layer.activation)
        dropout = f'pkeep {spec.pkeep:g} after {", ".join(dropped)}' if dropped else '–'
        hidden = ', '.join(sorted(display[a] for a in activations)) or '–'
        optimizer = spec.optimizer.__name__.replace('Optimizer', '')
        lines.append(f'| `{name}` | {" → ".join(shapes)} | {hidden} | {dropout} '
                     f'| {optimizer}, {spec.learning_rate} | {spec.iterations:,} '
                     f'| {spec.talk.says} |')
    return '\n'.join(lines)


BEYOND_SOURCE = 'its published code says'


def row(history):
    from graph_mnist import talk
    ok = history['status'] == 'finished'
    return (f"| `{history['model']}` | {talk.NETWORKS[history['model']].talk.says} "
            f"| {history['final_test_accuracy']:.4f} "
            f"| {history['max_test_accuracy']:.4f} (step {history['max_test_step']:,}) "
            f"| {history['final_step']:,} | {history['seed']} "
            f"| {history['wall_time']:.0f} s |" if ok else
            f"| `{history['model']}` | | run ended: {history['status']} | | | | |")


def table(histories):
    """Runs in the talk's order, then by seed."""
    from graph_mnist import talk
    order = list(talk.NETWORKS)
    histories = sorted(histories, key=lambda h: (order.index(h['model']), h['seed']))
    lines = ['| network | the talk | final test accuracy | max test accuracy | steps | seed '
             '| wall time |', '|---|---|---|---|---|---|---|']
    return '\n'.join(lines + [row(h) for h in histories])


def define_flags():
    flags.DEFINE_bool('networks', False, 'Print the table of the networks instead of runs.')


def main(argv):
    if FLAGS.networks:
        from graph_mnist import talk
        print(networks_table(talk.TALK))
        print('\nBeyond the talk (BN: batch norm before the activation):\n')
        print(networks_table(talk.BEYOND, BEYOND_SOURCE))
    elif len(argv) < 2:
        raise app.UsageError('name at least one run directory, or pass --networks')
    else:
        print(table([runs.read_history(workdir) for workdir in argv[1:]]))
    return 0


if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()
    cli.run(main, define_flags, positional='')
