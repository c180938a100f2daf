"""How every graph_mnist program starts, runs and fails: one preamble, one style.

Every entry point (`python -m graph_mnist.<module>`, `python scripts/<tool>.py`) has
the same shape:

    if __name__ == '__main__':         # process-wide, so the program's, never a library's
        from graph_mnist import cli
        cli.before_tensorflow()        # must come before TensorFlow is imported

    ...imports, library code...

    def define_flags():                # absl flags, defined only where the program starts,
        flags.DEFINE_...               # so that modules import side by side (train, export
                                       # and explain all take --workdir)
    def main(argv):                    # reads FLAGS, calls library functions
        ...

    if __name__ == '__main__':
        cli.run(main, define_flags)

`run` gives every program the same console: absl's logging in a short
'I 11:07:42 message' form on stderr, results on stdout, `app.UsageError` for bad usage
(absl prints the usage line, exit 1), a `UserError` as one line 'E ... message' with
exit 1 and never a traceback, Ctrl-C as exit 130.

`before_tensorflow` keeps TensorFlow's start-up chatter off the terminal. TensorFlow
2.21 writes its C++ info lines (oneDNN notice, CPU feature guard, CUDA probe, "All log
messages before absl::InitializeLog()...") straight to file descriptor 2 while it is
imported, before TF_CPP_MIN_LOG_LEVEL can act on them. So a pipe is put in front of
descriptor 2 that forwards every line except those: warnings and errors, ours and
TensorFlow's, still reach the terminal. Set GRAPH_MNIST_VERBOSE=1 to see everything.
"""

import atexit
import functools
import logging as std_logging
import os
import re
import signal
import sys
import threading

from absl import app
from absl import logging

from graph_mnist.errors import UserError

# C++ info lines ("I0000 00:00:1795777936.866249  3790 port.cc:153] ..."), the two
# banner lines, a Jupyter kernel's note on loopback TCP.
_NOISE = re.compile(
    rb'^(I\d{4} [\d:.]+ +\d+ \S+:\d+\]'
    rb'|WARNING: All log messages before absl::InitializeLog\(\) is called'
    rb'|To enable the following instructions: '
    # a Jupyter kernel started by papermill or the tests, talking over loopback TCP
    rb'|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption)')
# The CUDA probe's complaints (cuInit failing, no driver) are noise only on a machine
# with no NVIDIA GPU at all; where one is, every CUDA warning and error is shown.
_NO_GPU_PROBE = re.compile(rb'^[WE]\d{4} [\d:.]+ +\d+ (cuda\w*|cudart_stub)\.cc:\d+\]')


def has_nvidia_gpu():
    """Whether this machine has an NVIDIA driver loaded (a GPU TensorFlow could use)."""
    return os.path.exists('/proc/driver/nvidia') or os.path.exists('/dev/nvidia0')


def is_noise(line, gpu=None):
    if _NOISE.match(line):
        return True
    return not (has_nvidia_gpu() if gpu is None else gpu) and bool(_NO_GPU_PROBE.match(line))


def before_tensorflow():
    """The preamble of every entry point (and of the notebooks' first cell): hides
    TensorFlow's info output, keeps real messages. Call it before TensorFlow is imported."""
    if os.environ.get('GRAPH_MNIST_VERBOSE'):
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # C++ INFO and WARNING after start-up
    # TensorFlow's Python logger (tf.get_logger()): its deprecation notices for
    # tf.compat.v1 and SavedModel loading chatter are not for our users
    tensorflow = std_logging.getLogger('tensorflow')
    tensorflow.setLevel(std_logging.ERROR)
    # in a notebook's kernel TensorFlow sets that logger to INFO on first use (an
    # interactive session): a filter keeps the level ours
    if not any(isinstance(f, _ErrorsOnly) for f in tensorflow.filters):
        tensorflow.addFilter(_ErrorsOnly())
    _filter_stderr()


class _ErrorsOnly(std_logging.Filter):
    def filter(self, record):
        return record.levelno >= std_logging.ERROR


def _filter_stderr():
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return  # no usable descriptor 2 (some notebooks, services): nothing to filter

    gpu = has_nvidia_gpu()

    def pump():
        with os.fdopen(read_end, 'rb') as lines, os.fdopen(terminal, 'wb', buffering=0) as out:
            for line in lines:
                if not is_noise(line, gpu):
                    out.write(line)

    thread = threading.Thread(target=pump, name='stderr-filter', daemon=True)
    thread.start()
    original = os.dup(terminal)

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump reads to the end
        thread.join(timeout=5)

    atexit.register(restore)


class _Short(std_logging.Formatter):
    """'I 11:07:42 message' instead of absl's long default prefix."""

    def format(self, record):
        return f'{record.levelname[0]} {self.formatTime(record, "%H:%M:%S")} ' \
               f'{record.getMessage()}'


def _not_tensorflow_info(record):
    """TensorFlow also logs through absl (SavedModel loading: 'Fingerprint not found...'):
    its info lines are not for our users; its warnings and errors are."""
    return record.levelno >= std_logging.WARNING or \
        f'{os.sep}tensorflow{os.sep}' not in record.pathname


def run(main, define_flags=None, positional=None):
    """Defines the program's flags, parses them, runs `main(argv)` and exits with its
    status. positional: what the program takes after its flags (e.g. 'image file'; ''
    when it may take nothing there), or None when it takes nothing there (then anything
    there is a usage error)."""
    if define_flags:
        define_flags()
    app.run(functools.partial(_main, main, positional))


def _main(main, positional, argv):
    if positional is None and len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if positional and len(argv) < 2:
        raise app.UsageError(f'name at least one {positional}')
    handler = logging.get_absl_handler()
    handler.setFormatter(_Short())
    handler.addFilter(_not_tensorflow_info)
    std_logging.getLogger('tensorflow').setLevel(std_logging.ERROR)  # again: TensorFlow's
    # import may have set it (to INFO in an interactive session)
    try:
        return main(argv)
    except UserError as e:
        logging.error('%s', e)
        return 1
    except KeyboardInterrupt:
        logging.error('interrupted')
        return 130
    except BrokenPipeError:  # `... | head`: the reader has gone, nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def stop_on_signals(saving=True):
    """Ctrl-C and SIGTERM ask the loop to stop at the next step (after a checkpoint,
    when `saving`); a second Ctrl-C stops at once. Process-wide: for entry points."""
    requested = threading.Event()

    def handler(signum, frame):
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()
        logging.warning('%s: %sstopping (Ctrl-C again to stop now)',
                        signal.Signals(signum).name, 'saving a checkpoint and ' if saving else '')

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return requested.is_set
