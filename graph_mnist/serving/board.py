"""What every serving process shares: the decision (which versions of which models to
load, which answer, their labels and states) and what each process holds. One process
(the first) decides; all read. A directory in shared memory (/dev/shm where there is
one): TensorFlow Serving has one process and one manager; ours are several, so one
place decides for all.

    generation          8 bytes, mapped by every process: the decision's number, read
                        on every request (a new decision is seen by the next request of
                        every process at once)
    decision.<n>.json   decision n, written whole before n is published and never
                        changed: every process reading n reads the same decision
    holds.<i>.json      what process i holds, having followed decision n: {"generation":
                        n, "models": {model: {"held": [...], "failed": {...}}}}

A decision: {model: {"base_path", "aspired": [versions to load], "served": [versions
that answer], "labels": {label: version}, "states": {version: [state, message]}}}."""

import json
import mmap
import os
import struct
import tempfile
import threading

KEEP = 16  # old decisions kept for a reader between the generation and the file


class Board:

    def __init__(self, path, processes=None):
        """Creates the board for `processes` in the directory `path` (the deciding
        process) or opens it."""
        self.path = path
        head = os.path.join(path, 'generation')
        if processes is not None:
            with open(head, 'wb') as f:
                f.write(struct.pack('<qq', 0, processes))
            self.write(self.decision_path(0), {})
        self.file = open(head, 'r+b')
        self.map = mmap.mmap(self.file.fileno(), 0)
        self.processes = struct.unpack_from('<q', self.map, 8)[0]
        self.cached = (None, {})
        self.reported = {}

    @classmethod
    def create(cls, processes):
        where = '/dev/shm' if os.path.isdir('/dev/shm') else None
        return cls(tempfile.mkdtemp(prefix='graph_mnist_serving_', dir=where), processes)

    @property
    def generation(self):
        return struct.unpack_from('<q', self.map, 0)[0]

    def decision_path(self, generation):
        return os.path.join(self.path, f'decision.{generation}.json')

    def write(self, path, value):
        """Replaced whole, so a reader sees all or nothing (a temporary of this writer's
        own: two threads of one process may write at once)."""
        temporary = f'{path}.{os.getpid()}.{threading.get_ident()}.tmp'
        with open(temporary, 'w') as f:
            json.dump(value, f)
        os.replace(temporary, path)

    def decision(self):
        """The published decision (read again only when its generation changes)."""
        generation = self.generation
        if self.cached[0] != generation:
            for _ in range(100):
                try:
                    with open(self.decision_path(generation)) as f:
                        self.cached = (generation, json.load(f))
                    break
                except FileNotFoundError:  # long since replaced: the newest instead
                    generation = self.generation
        return self.cached[1]

    def publish(self, decision):
        """(deciding process) the next decision, then its generation."""
        generation = self.generation + 1
        self.write(self.decision_path(generation), decision)
        struct.pack_into('<q', self.map, 0, generation)
        try:
            os.remove(self.decision_path(generation - KEEP))
        except OSError:
            pass

    def report(self, index, holds):
        """Process `index` reports what it holds (the holds.<i>.json above)."""
        if holds != self.reported:
            self.write(os.path.join(self.path, f'holds.{index}.json'), holds)
            self.reported = json.loads(json.dumps(holds))

    def holds(self, index):
        try:
            with open(os.path.join(self.path, f'holds.{index}.json')) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # nothing reported yet

    def forget(self, index):
        """Process `index` was started again: what it reported before no longer stands."""
        try:
            os.remove(os.path.join(self.path, f'holds.{index}.json'))
        except OSError:
            pass

    def close(self, remove=False):
        self.map.close()
        self.file.close()
        if remove:
            import shutil
            shutil.rmtree(self.path, ignore_errors=True)
