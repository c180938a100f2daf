"""The versions of every model in one serving process: those the board's decision says
to load, loaded beside those that answer, each load in a thread of its own with a
deadline (TensorFlow Serving's AspiredVersionsManager, its loading half); the deciding
half is decide.py, in the first process only.

A version is loaded by every process before the decision lets it answer, so every
process can answer every version the decision serves, and a client is never answered
by an older version after a newer one. A version no longer wanted is retired once what
it was given is answered."""

import asyncio
import concurrent.futures
import functools
import gc
import os
import threading
import time

from absl import logging

from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.errors import Unloaded
from graph_mnist.serving.errors import bad_request
from graph_mnist.serving.errors import not_found


def reason(error):
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class Loading:
    """One attempt at loading a version, in a thread of its own: a load that hangs is
    abandoned at its deadline (its thread left to end, what it loads closed) and tried
    again in a new one, so it holds back neither this model's later versions nor the
    other models."""

    def __init__(self, load, version, path, seconds):
        self.servable = self.error = None
        self.deadline = time.monotonic() + seconds
        self.done, self.abandoned, self.lock = threading.Event(), False, threading.Lock()
        threading.Thread(target=self.run, args=(load, version, path), daemon=True,
                         name=f'load-{version}').start()

    def run(self, load, version, path):
        try:
            servable = load(version, path)
        except Exception as e:  # noqa: BLE001 -- whatever the reason: reported, retried
            self.error = reason(e)
        else:
            with self.lock:
                if self.abandoned:
                    servable.close()
                else:
                    self.servable = servable
        finally:
            self.done.set()

    def late(self):
        return not self.done.is_set() and time.monotonic() > self.deadline

    def abandon(self):
        with self.lock:
            self.abandoned = True
            if self.servable is not None:
                self.servable.close()


class Held:
    """One model's versions in this process, from its base path."""

    def __init__(self, base_path):
        self.base_path = base_path
        self.servables = {}  # version: Servable
        self.loading = {}    # version: Loading under way
        self.attempts = {}   # version: attempts that failed
        self.retry_at = {}   # version: when the next attempt may start
        self.failed = {}     # version: why it was given up, in this process


class Versions:
    """The versions this process holds, following the board's decision. load(model,
    version, path) -> a Servable (servable.Servable); retries and retry_seconds as TensorFlow
    Serving's --max_num_load_retries and --load_retry_interval_micros; a load not done
    in load_seconds is abandoned and counts as a failed attempt. `decider`
    (decide.Decider, in the first process): run in the same thread."""

    def __init__(self, board, load, index=0, retries=5, retry_seconds=60.0,
                 load_seconds=600.0, decider=None):
        self.board, self.load, self.index = board, load, index
        self.retries, self.retry_seconds, self.load_seconds = retries, retry_seconds, load_seconds
        self.decider = decider
        self.models = {}  # name: Held
        self.retiring = []  # futures of versions finishing their requests
        self.stopping = threading.Event()
        self.thread = self.loop = None

    def start(self, timeout=600):
        """Loads what the decision asks for (the first process decides it first), until
        every version is held or given up (and, deciding, until every process holds
        them), for `timeout` seconds at most; then follows in a thread of its own."""
        deadline = time.monotonic() + timeout
        while True:
            if self.decider is not None:
                self.decider.step()
            self.follow()
            if self.settled() and (self.decider is None or self.decider.settled()):
                break
            if time.monotonic() > deadline:
                logging.warning('the first versions are not loaded everywhere after %g s: '
                                'serving what is ready', timeout)
                break
            time.sleep(0.02)
        self.thread = threading.Thread(target=self.keep_going, name='versions', daemon=True)
        self.thread.start()

    def serve_on(self, loop):
        """The event loop where old versions finish the requests they were given."""
        self.loop = loop

    def keep_going(self):
        while not self.stopping.wait(0.02):
            try:
                self.follow()
                if self.decider is not None:
                    self.decider.step()
            except Exception as e:  # noqa: BLE001 -- a bad moment on the disk: it goes on
                logging.error('versions: %s', e)

    def settled(self):
        decision = self.board.decision()
        return all(not held.loading and all(
            v in held.servables or v in held.failed
            for v in decision[name]['aspired'] + decision[name]['served'])
            for name, held in self.models.items() if name in decision)

    def follow(self):
        """Loads the decision's versions, retires those it no longer wants, and reports
        what this process holds."""
        self.retired()
        generation = self.board.generation
        decision = self.board.decision()
        for name, entry in decision.items():
            held = self.models.get(name)
            if held is not None and held.base_path != entry['base_path']:  # moved: anew
                self.drop(self.models.pop(name))
                held = None
            if held is None:
                held = self.models[name] = Held(entry['base_path'])
            wanted = set(entry['aspired']) | set(entry['served'])
            for version in sorted(wanted, reverse=True):  # the newest first
                self.step(name, held, entry['base_path'], version)
            for version in [v for v in held.servables if v not in wanted]:
                self.retire(held.servables.pop(version))
            for version in [v for v in held.loading if v not in wanted]:
                held.loading.pop(version).abandon()
        for name in [n for n in self.models if n not in decision]:  # a model removed
            self.drop(self.models.pop(name))
        self.board.report(self.index, {'generation': generation, 'models': {
            name: {'held': sorted(held.servables),
                   'failed': {str(v): why for v, why in held.failed.items()}}
            for name, held in self.models.items()}})

    def drop(self, held):
        """Retires every version of a model, and abandons its loads."""
        for servable in held.servables.values():
            self.retire(servable)
        for loading in held.loading.values():
            loading.abandon()

    def step(self, name, held, base_path, version):
        """One step of loading `version`: start an attempt, or take its result."""
        if version in held.servables or version in held.failed:
            return
        loading = held.loading.get(version)
        if loading is None:
            if time.monotonic() >= held.retry_at.get(version, 0):
                held.loading[version] = Loading(functools.partial(self.load, name), version,
                                                os.path.join(base_path, str(version)),
                                                self.load_seconds)
            return
        if loading.done.is_set() and loading.servable is not None:
            del held.loading[version]
            # TensorFlow and a loaded graph are hundreds of thousands of Python objects
            # that live as long as the server; parsing a request's JSON makes tens of
            # thousands more, which set off the cyclic collector, and a full collection
            # walking them all paused requests for 180 ms. Frozen, the collector skips them.
            gc.freeze()
            held.servables[version] = loading.servable
            return
        if loading.done.is_set():
            why = loading.error
        elif loading.late():
            loading.abandon()
            why = f'not loaded within {self.load_seconds:g} s (--load_timeout_seconds)'
        else:
            return
        del held.loading[version]
        attempts = held.attempts[version] = held.attempts.get(version, 0) + 1
        if attempts > self.retries:
            held.failed[version] = why
            return
        logging.warning('version %d of %s could not be loaded (%s); trying again in %g s',
                        version, name, why, self.retry_seconds)
        held.retry_at[version] = time.monotonic() + self.retry_seconds

    def retire(self, servable):
        """Closes a version once it has answered what it was given (in the event loop;
        this thread goes on meanwhile)."""
        if self.loop is not None and self.loop.is_running():
            self.retiring.append(asyncio.run_coroutine_threadsafe(servable.retire(),
                                                                  self.loop))
        else:
            servable.close()
            closed = concurrent.futures.Future()
            closed.set_result(None)
            self.retiring.append(closed)

    def retired(self):
        """Once every retiring version is closed: its memory freed (at the next step, when
        nothing of this thread refers to it any more)."""
        if self.retiring and all(f.done() for f in self.retiring):
            for future in self.retiring:
                if future.exception() is not None:
                    logging.error('retiring a version: %s', reason(future.exception()))
            self.retiring = []
            self.collect()

    @staticmethod
    def collect():
        """A closed version's graph is cycles of objects frozen with the rest (see
        step): unfrozen, collected, the living frozen again. One full collection per
        version retired (it pauses requests about as long as the one freezing avoids)."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    # ------------------------------------------------------------------- requests

    def resolve(self, name, version, label):
        """(the model's decision, the version asked for or None for the newest)."""
        entry = self.board.decision().get(name)
        if label is not None:
            version = entry['labels'].get(label) if entry else None
            if version is None:
                raise bad_request(f'Unrecognized servable version label: {label}')
        return entry, version

    def get(self, name, version=None, label=None):
        """The Servable for a request, or ServingError as TensorFlow Serving says it
        (404: no such model or version; 400: no such label)."""
        entry, version = self.resolve(name, version, label)
        served = entry['served'] if entry else ()
        if version is None:
            if not served:
                raise not_found(f'Servable not found for request: Latest({name})')
            version = served[-1]
        held = self.models.get(name)
        servable = held.servables.get(version) if held and version in served else None
        if servable is None:
            raise not_found(f'Servable not found for request: Specific({name}, {version})')
        return servable

    def status(self, name, version=None, label=None):
        """[(version, state, error message)] newest first, as TensorFlow Serving's
        GetModelStatus gives them: a version that was retired is there with END."""
        entry, version = self.resolve(name, version, label)
        states = {int(v): tuple(s) for v, s in entry['states'].items()} if entry else {}
        if version is not None:
            if version not in states:
                raise not_found(f'Could not find version {version} of model {name}')
            return [(version, *states[version])]
        if not states:
            raise not_found(f'Could not find any versions of model {name}')
        return [(v, *states[v]) for v in sorted(states, reverse=True)]

    async def predict(self, name, version, label, signature_name, read, missing):
        """Runs one request through the version's batcher: (servable, outputs, what
        read returned beside the inputs). read(signature) -> (inputs, examples, extra);
        missing(signature_name) -> the error for a signature the version lacks. A
        version retired between choosing it and running the request: asked again."""
        for _ in range(3):
            servable = self.get(name, version, label)
            signature = servable.signatures.get(signature_name)
            if signature is None:
                raise missing(signature_name)
            inputs, n, extra = read(signature)
            try:
                outputs = await servable.batchers[signature_name](inputs, n)
            except Unloaded:
                continue
            return servable, outputs, extra
        raise ServingError(503, 'the model is being reloaded; try again')

    def stop(self):
        self.stopping.set()
        if self.thread:
            self.thread.join()
        for held in self.models.values():
            for servable in held.servables.values():
                servable.close()
            for loading in held.loading.values():
                loading.abandon()
