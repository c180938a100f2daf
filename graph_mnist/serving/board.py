"""What every serving process shares: which version to load, which one answers, what
each process holds, and the versions' states. One process (the first) decides; all
read. A small file in shared memory (/dev/shm where there is one), mapped by every
process: the serving version is read on every request, so a flip is seen by the next
request of every process at once (TensorFlow Serving has one process and one manager;
ours are several, so one place decides for all).

Layout, 8-byte integers: [target, serving, processes, 0, then per process: the newest
version it has loaded (or minus the version it failed to load), the oldest it still
holds]. The states (TF Serving's LOADING, AVAILABLE, END with a message) are JSON beside
it, replaced whole by the deciding process."""

import json
import mmap
import os
import struct
import tempfile
import threading

HEAD = 4
TARGET, SERVING, COUNT = 0, 1, 2


class Board:

    def __init__(self, path, processes=None):
        """Creates the board for `processes` (the deciding process) or opens it."""
        self.path = path
        if processes is not None:
            with open(path, 'wb') as f:
                f.write(b'\0' * 8 * (HEAD + 2 * processes))
        self.file = open(path, 'r+b')
        self.map = mmap.mmap(self.file.fileno(), 0)
        if processes is not None:
            self.set(COUNT, processes)
        self.processes = self.get(COUNT)

    @classmethod
    def create(cls, processes):
        where = '/dev/shm' if os.path.isdir('/dev/shm') else None
        handle, path = tempfile.mkstemp(prefix='graph_mnist_serving_', suffix='.board',
                                        dir=where)
        os.close(handle)
        return cls(path, processes)

    def get(self, slot):
        return struct.unpack_from('<q', self.map, 8 * slot)[0]

    def set(self, slot, value):
        struct.pack_into('<q', self.map, 8 * slot, value)

    @property
    def serving(self):
        return self.get(SERVING)

    @property
    def target(self):
        return self.get(TARGET)

    def holds(self, index):
        """(newest loaded or -failed, oldest held) of process `index`."""
        return self.get(HEAD + 2 * index), self.get(HEAD + 2 * index + 1)

    def report(self, index, loaded, oldest):
        self.set(HEAD + 2 * index, loaded)
        self.set(HEAD + 2 * index + 1, oldest)

    def write_states(self, states):
        """{version: (state, message)}: replaced whole, so a reader sees all or nothing."""
        # a temporary of this writer's own: two threads (the poller and the start-up's
        # settle) may publish at once, and a shared name let one rename the other's away
        temporary = f'{self.path}.states.{os.getpid()}.{threading.get_ident()}.tmp'
        with open(temporary, 'w') as f:
            json.dump({str(v): list(s) for v, s in states.items()}, f)
        os.replace(temporary, self.path + '.states')

    def states(self):
        try:
            with open(self.path + '.states') as f:
                return {int(v): tuple(s) for v, s in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    def close(self, remove=False):
        self.map.close()
        self.file.close()
        if remove:
            for path in (self.path, self.path + '.states'):
                try:
                    os.remove(path)
                except OSError:
                    pass
