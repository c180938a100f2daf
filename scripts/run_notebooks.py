r"""Executes the notebooks in a real Jupyter kernel (papermill), outputs and all.

    python scripts/run_notebooks.py --output_dir=notebooks     # the committed outputs: full run
    python scripts/run_notebooks.py --iterations=50             # a quick tour

Each notebook of notebooks/ is run top to bottom with its parameters cell set from the
flags (--iterations; unset, each notebook keeps its own default: the talk's number of
steps) and written, with every output, into --output_dir (default
runs/notebooks-<date>-<time>; `--output_dir=notebooks` refreshes the committed ones).
The trainings write their runs under runs/ of the working directory. A notebook that
fails is named with the cell that failed; the others still run.
"""

if __name__ == '__main__':  # the kernels inherit the filtered stderr
    from graph_mnist import cli
    cli.before_tensorflow()

import glob
import os
import time

from absl import flags
from absl import logging

from graph_mnist import runs
from graph_mnist.errors import UserError

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'notebooks')
FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list('notebooks', sorted(glob.glob(os.path.join(NOTEBOOKS, '*.ipynb'))),
                      'Notebooks to run.')
    flags.DEFINE_integer('iterations', None, 'Caps every training cell (default: each '
                         'notebook\'s own).', lower_bound=1)
    flags.DEFINE_string('data_dir', None, 'MNIST directory, passed to the notebooks.')
    flags.DEFINE_string('output_dir', None, 'Where the executed notebooks go (default '
                        'runs/notebooks-<date>-<time>).')


def execute(path, output, **parameters):
    """Runs one notebook in a fresh kernel; raises papermill's error naming the cell."""
    import logging as std_logging

    import papermill
    std_logging.getLogger('papermill').setLevel(std_logging.WARNING)  # its per-cell chatter
    papermill.execute_notebook(path, output, parameters=parameters, kernel_name='python3',
                               progress_bar=False, cwd=os.getcwd())


def main(argv):
    del argv
    output_dir = FLAGS.output_dir or runs.new_dir('notebooks')
    os.makedirs(output_dir, exist_ok=True)
    parameters = {k: v for k, v in (('iterations', FLAGS.iterations),
                                    ('data_dir', FLAGS.data_dir)) if v is not None}
    failed = []
    for path in FLAGS.notebooks:
        output = os.path.join(output_dir, os.path.basename(path))
        start = time.perf_counter()
        try:
            execute(path, output, **parameters)
        except Exception as e:  # noqa: BLE001 -- papermill's error names the cell; go on
            failed.append(f'{path}: {str(e).strip().splitlines()[0]}')
            logging.error('%s failed: see %s', path, output)
            continue
        logging.info('%s: %.0f s, %d kB -> %s', os.path.basename(path),
                     time.perf_counter() - start, os.path.getsize(output) // 1024, output)
    if failed:
        raise UserError('notebooks that failed:\n  ' + '\n  '.join(failed))
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
