"""Prints a Markdown table of finished runs beside the talk's numbers.

    python scripts/results_table.py runs/softmax runs/conv_dropout ...

Every figure comes from the runs' history.json files; nothing is typed in.
"""

import json
import os
import sys


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


def main(workdirs):
    if not workdirs:
        sys.exit(__doc__)
    histories = []
    for workdir in workdirs:
        with open(os.path.join(workdir, 'history.json')) as f:
            histories.append(json.load(f))
    print(table(histories))


if __name__ == '__main__':
    main(sys.argv[1:])
