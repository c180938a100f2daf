"""Keeps TensorFlow's start-up chatter off the user's terminal (entry points only).

TensorFlow 2.21 writes its C++ info lines (oneDNN notice, CPU feature guard, CUDA
probe, "All log messages before absl::InitializeLog()...") straight to file
descriptor 2, before TF_CPP_MIN_LOG_LEVEL can act on them. `filter_stderr` puts a
pipe in front of descriptor 2 and forwards every line except those info lines, so
warnings and errors, ours and TensorFlow's, still reach the terminal.

This switches process-wide state, so only the `__main__` blocks call it, never a
library import. Set GRAPH_MNIST_VERBOSE=1 to see everything.
"""

import atexit
import os
import re
import sys
import threading

# C++ info lines ("I0000 00:00:1795777936.866249  3790 port.cc:153] ..."), the CUDA
# probe's complaints on a machine without a GPU, and the two banner lines.
_NOISE = re.compile(
    rb'^(I\d{4} [\d:.]+ +\d+ \S+:\d+\]'
    rb'|[WE]\d{4} [\d:.]+ +\d+ (cuda\w*|cudart_stub)\.cc:\d+\]'
    rb'|WARNING: All log messages before absl::InitializeLog\(\) is called'
    rb'|To enable the following instructions: )')


def is_noise(line):
    return bool(_NOISE.match(line))


def quiet_tensorflow():
    """Call before importing TensorFlow: hides its info output, keeps real messages."""
    if os.environ.get('GRAPH_MNIST_VERBOSE'):
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # C++ INFO and WARNING after start-up
    filter_stderr()


def filter_stderr():
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return  # no usable descriptor 2 (some notebooks, services): nothing to filter

    def pump():
        with os.fdopen(read_end, 'rb') as lines, os.fdopen(terminal, 'wb', buffering=0) as out:
            for line in lines:
                if not is_noise(line):
                    out.write(line)

    thread = threading.Thread(target=pump, name='stderr-filter', daemon=True)
    thread.start()
    original = os.dup(terminal)

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump reads to the end
        thread.join(timeout=5)

    atexit.register(restore)
