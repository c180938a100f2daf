r"""Checks the version floors of pyproject.toml: a fresh virtual environment with every
direct dependency (core, `serve` and `test` extras) pinned at its floor, then the linter
and the tests in it.

    python scripts/check_floors.py --venv=/tmp/floors
    python scripts/check_floors.py --venv=/tmp/floors --tests='-m "not slow"'

The pins are read from pyproject.toml (each `name>=X` becomes `name==X`), so the floors
are written once. PyTorch is not pinned (the benchmark's peer, not a dependency): the
tests that need it skip here.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os
import re
import shlex
import subprocess
import sys
import tomllib

from absl import flags
from absl import logging

from graph_mnist.errors import UserError

FLAGS = flags.FLAGS
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def define_flags():
    flags.DEFINE_string('venv', None, 'Where to make the virtual environment (new).')
    flags.DEFINE_string('tests', '-m "not slow"', 'pytest\'s arguments, as one string.')
    flags.mark_flag_as_required('venv')


def floors(pyproject):
    """['name==X', ...]: each direct dependency with a floor, pinned at it."""
    project = pyproject['project']
    wanted = [*project['dependencies'], *project['optional-dependencies']['serve'],
              *project['optional-dependencies']['test']]
    pins = []
    for requirement in wanted:
        found = re.fullmatch(r'([A-Za-z0-9_.\-]+)(\[[^\]]*\])?>=([0-9][0-9.]*)', requirement)
        if found:
            pins.append(f'{found.group(1)}=={found.group(3)}')
    return pins


def run(command, **kwargs):
    logging.info('%s', ' '.join(shlex.quote(c) for c in command))
    result = subprocess.run(command, **kwargs)
    if result.returncode:
        raise UserError(f'failed ({result.returncode}): {" ".join(command)}')


def main(argv):
    del argv
    if os.path.exists(FLAGS.venv):
        raise UserError(f'{FLAGS.venv} exists: give a new directory')
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        pins = floors(tomllib.load(f))
    os.makedirs(FLAGS.venv)
    constraints = os.path.join(FLAGS.venv, 'floors.txt')
    with open(constraints, 'w') as f:
        f.write('\n'.join(pins) + '\n')
    logging.info('floors: %s', ', '.join(pins))
    python = os.path.join(FLAGS.venv, 'bin', 'python')
    run([sys.executable, '-m', 'venv', FLAGS.venv])
    run([python, '-m', 'pip', 'install', '-q', '-c', constraints, '-e', f'{ROOT}[test]'])
    run([python, '-m', 'ruff', 'check', '.'], cwd=ROOT)
    run([python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *shlex.split(FLAGS.tests)],
        cwd=ROOT)
    print(f'the floors hold: {", ".join(pins)}')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
