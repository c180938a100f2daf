"""The programs on the PATH after `pip install` (pyproject.toml's [project.scripts]):
`graph-mnist-train` is `python -m graph_mnist.train`, and so on. Each runs its module as
`python -m` runs it, after quieting TensorFlow's start-up output (cli.before_tensorflow),
which must happen before TensorFlow is imported: so this module imports no TensorFlow,
and the program's own module is loaded only then."""

import ast
import importlib.util
import os
import runpy
import sys

import __main__
from graph_mnist import cli


def _run(module):
    cli.before_tensorflow()
    # the usage line and --help name the command as typed (`graph-mnist-train`), not the
    # module's file: sys.argv[0] is kept (alter_sys=False), without its directory
    sys.argv[0] = os.path.basename(sys.argv[0])
    # and --help opens with the module's docstring, as absl shows it for `python -m`
    # (absl reads __main__'s, here this command's wrapper)
    source = importlib.util.find_spec(f'graph_mnist.{module}').origin
    with open(source, encoding='utf-8') as f:
        __main__.__doc__ = ast.get_docstring(ast.parse(f.read()), clean=False)
    runpy.run_module(f'graph_mnist.{module}', run_name='__main__', alter_sys=False)


def train():
    _run('train')


def export():
    _run('export')


def predict():
    _run('predict')


def serve():
    _run('serve')


def cluster():
    _run('cluster')


def explain():
    _run('explain')


def data():
    _run('data')


def dashboard():
    _run('dashboard')


def pod():
    _run('pod')
