"""Prints a Markdown table of finished runs beside the talk's numbers.

    python scripts/results_table.py runs/latest results/talk_comparison/runs/*-seed0

Every figure comes from the runs' history.json files; nothing is typed in.
"""

from graph_mnist import runs


def row(history):
    ok = history['status'] == 'finished'
    return (f"| `{history['model']}` | {history['talk_accuracy']} "
            f"| {history['final_test_accuracy']:.4f} "
            f"| {history['max_test_accuracy']:.4f} (step {history['max_test_step']:,}) "
            f"| {history['final_step']:,} | {history['seed']} "
            f"| {history['wall_time']:.0f} s |" if ok else
            f"| `{history['model']}` | | run ended: {history['status']} | | | | |")


def table(histories):
    lines = ['| network | the talk | final test accuracy | max test accuracy | steps | seed '
             '| wall time |', '|---|---|---|---|---|---|---|']
    return '\n'.join(lines + [row(h) for h in histories])


def main(argv):
    print(table([runs.read_history(workdir) for workdir in argv[1:]]))
    return 0


if __name__ == '__main__':
    from graph_mnist import cli
    cli.run(main, positional='run directory')
