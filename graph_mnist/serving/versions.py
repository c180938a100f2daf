"""The version manager: numbered SavedModels under a base path, the newest served,
polled for new ones, a new version loaded beside the old one before it takes over
(TensorFlow Serving's AspiredVersionsManager, for one model), one decision for all the
serving processes (board.py)."""

import asyncio
import dataclasses
import functools
import gc
import os
import threading
import time

from absl import logging
import numpy as np

from graph_mnist import export
from graph_mnist import preprocess
from graph_mnist.serving.batching import MAX_ENQUEUED_BATCHES
from graph_mnist.serving.batching import Batcher
from graph_mnist.serving.board import SERVING
from graph_mnist.serving.board import TARGET
from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.errors import Unloaded
from graph_mnist.serving.errors import bad_request
from graph_mnist.serving.errors import not_found


class Signature:
    """One signature of a loaded SavedModel: its inputs and outputs, a callable."""

    def __init__(self, session, graph, name, definition):
        from google.protobuf import json_format
        import tensorflow as tf
        self.name = name
        self.proto = definition  # the SignatureDef, as gRPC's metadata sends it
        self.definition = json_format.MessageToDict(
            definition, always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True)
        self.inputs = {}  # name: (dtype, shape with None for unknown sizes)
        for key, info in definition.inputs.items():
            dims = None if info.tensor_shape.unknown_rank else [
                None if d.size < 0 else d.size for d in info.tensor_shape.dim]
            self.inputs[key] = (tf.dtypes.as_dtype(info.dtype), dims)
        self.outputs = sorted(definition.outputs)
        feeds = [graph.get_tensor_by_name(definition.inputs[k].name) for k in self.inputs]
        fetches = [graph.get_tensor_by_name(definition.outputs[k].name) for k in self.outputs]
        self.callable = session.make_callable(fetches, feed_list=feeds)
        self.errors = tf.errors

    def __call__(self, inputs):
        try:
            values = self.callable(*[inputs[k] for k in self.inputs])
        except self.errors.InvalidArgumentError as e:
            raise bad_request(preprocess.reason(e)) from None
        return dict(zip(self.outputs, values))


@dataclasses.dataclass(frozen=True)
class Settings:
    """How every version is run: batching (TensorFlow Serving's batching parameters),
    TensorFlow's threads, and where batches are counted."""
    max_batch_size: int = 64
    batch_timeout_seconds: float = 0.0
    threads: tuple = (1, 1)  # TensorFlow's intra-op, inter-op
    max_enqueued_batches: int = MAX_ENQUEUED_BATCHES
    metrics: object = None   # metrics.Metrics, or None
    warm_up: bool = True     # replay the version's warm-up requests


class Servable:
    """One version: its own graph and Session, one batcher per signature."""

    def __init__(self, version, path, settings):
        import tensorflow as tf
        self.version, self.path = version, path
        self.graph = tf.Graph()
        max_batch_size, threads = settings.max_batch_size, settings.threads
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads[0],
                                          inter_op_parallelism_threads=threads[1])
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ['serve'], path)
        self.graph.finalize()
        self.signatures = {name: Signature(self.session, self.graph, name, definition)
                           for name, definition in meta.signature_def.items()}
        if settings.warm_up:
            self.replay(os.path.join(path, export.WARMUP))
            self.warm_up(max_batch_size)
        metrics = settings.metrics
        self.batchers = {name: Batcher(signature, max_batch_size,
                                       settings.batch_timeout_seconds,
                                       f'batcher-{version}-{name}',
                                       settings.max_enqueued_batches,
                                       functools.partial(metrics.batched, name) if metrics
                                       else None)
                         for name, signature in self.signatures.items()}

    def replay(self, path):
        """Runs the version's warm-up requests (TensorFlow Serving's
        assets.extra/tf_serving_warmup_requests: PredictionLogs in a TFRecord file), as
        TF Serving does before the version answers. A request that fails is reported,
        and the version served all the same."""
        if not os.path.isfile(path):
            return
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2
        for number, record in enumerate(tf.compat.v1.io.tf_record_iterator(path)):
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if log.WhichOneof('log_type') != 'predict_log':
                continue
            request = log.predict_log.request
            signature = self.signatures.get(request.model_spec.signature_name or
                                            'serving_default')
            try:
                signature({name: tf.make_ndarray(request.inputs[name])
                           for name in signature.inputs})
            except Exception as e:  # noqa: BLE001 -- warm-up is a courtesy
                logging.warning('warm-up request %d of version %d failed: %s', number,
                                self.version, str(e).splitlines()[0] if str(e) else e)

    def warm_up(self, max_batch_size):
        """Runs each signature of numbers once on zeros, as TensorFlow Serving runs its
        warm-up requests: the first Session call of a shape costs about 100 ms, which
        would otherwise fall on the first requests of a new version."""
        for signature in self.signatures.values():
            shapes = [dims for dtype, dims in signature.inputs.values()
                      if dtype.is_floating and dims and None not in dims[1:]]
            if len(shapes) != len(signature.inputs):
                continue  # pictures and other inputs: no made-up example
            for n in sorted({1, 2, max_batch_size}):
                signature({name: np.zeros([n, *dims[1:]], dtype.as_numpy_dtype)
                           for name, (dtype, dims) in signature.inputs.items()})

    async def retire(self):
        """Takes no more requests, answers those it has, then closes (event loop)."""
        for batcher in self.batchers.values():
            await batcher.stop()
        self.session.close()

    def close(self):
        """Closes at once (the server has stopped taking requests)."""
        for batcher in self.batchers.values():
            batcher.stopped = True
            batcher.thread.shutdown()
        self.session.close()


class Manager:
    """The versions under a model base path, the newest served (TensorFlow Serving's
    AspiredVersionsManager with its default policy, for one model), in one of several
    serving processes that share a Board. The deciding process (index 0) polls the base
    path and sets the version to load; every process loads it beside the one it serves
    (retrying as TF Serving does); once every process holds it, the deciding process
    flips the board's serving version, read by every request of every process, so that
    no client is answered by an older version after a newer one. Then each retires the
    old one when what it was given is answered."""

    def __init__(self, name, base_path, settings, board, index=0, poll_seconds=1.0,
                 retries=(5, 60.0)):
        self.name, self.base_path = name, base_path
        self.settings = settings  # Settings
        self.board, self.index, self.deciding = board, index, index == 0
        self.poll_seconds = poll_seconds  # 0: the base path is read once
        self.retries, self.retry_seconds = retries  # --max_num_load_retries, the interval
        self.servables = {}      # version: Servable, in this process
        self.errors = {}         # version: why this process could not load it
        self.given_up = None     # the version this process tried to load and could not
        self.states = {}         # (deciding) version: (state, error message)
        self.failed = set()      # (deciding) versions given up on
        self.stopping = threading.Event()
        self.thread = None
        self.loop = None  # the server's event loop, where old versions retire
        # (deciding) the processes still running, whose holdings count: one that ended
        # (it failed to start, or was killed) must not hold back every later version
        self.running = lambda: range(board.processes)

    @property
    def current(self):
        """The Servable answering requests now: the board's serving version."""
        return self.servables.get(self.board.serving)

    def start(self):
        """Loads what is to be served (the deciding process first decides), then keeps
        following the board in a thread of its own."""
        if self.deciding:
            self.decide()
        self.follow()
        self.thread = threading.Thread(target=self.keep_going, name='versions', daemon=True)
        self.thread.start()

    def keep_going(self):
        next_poll = time.monotonic() + self.poll_seconds
        while not self.stopping.wait(0.02):
            try:
                self.follow()
                if self.deciding:
                    self.settle()
                    if self.poll_seconds > 0 and time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + self.poll_seconds
                        self.decide()
            except Exception as e:  # noqa: BLE001 -- a bad moment on the disk: the server goes on
                logging.error('versions of %s: %s', self.name, e)

    # ------------------------------------------------------------ the deciding process

    def publish(self, version, state, message=''):
        self.states[version] = (state, message)
        self.board.write_states(self.states)

    def decide(self):
        """Polls the base path: the newest version becomes the one to load (one change
        at a time: a newer one waits until the last is served or given up)."""
        board = self.board
        if board.target != board.serving:
            return
        newest = max((v for v in export.versions(self.base_path) if v not in self.failed),
                     default=None)
        if newest is None or newest == board.target:
            return
        self.publish(newest, 'LOADING')
        board.set(TARGET, newest)

    def settle(self):
        """Flips the board to the version to load once every process holds it, or
        gives it up when one could not load it; marks retired versions END once no
        process holds them."""
        board = self.board
        target, serving = board.target, board.serving
        everyone = [board.holds(i) for i in self.running()]
        if target != serving:
            if all(loaded == target for loaded, _ in everyone):
                if serving:
                    self.publish(serving, 'UNLOADING')
                self.publish(target, 'AVAILABLE')
                board.set(SERVING, target)
                logging.info('serving %s version %d (%s, in %d processes)', self.name, target,
                             self.servables[target].path, len(everyone))
            elif any(loaded == -target for loaded, _ in everyone):
                message = self.errors.get(target, 'it could not be loaded in every serving '
                                                  'process')
                logging.error('version %d of %s cannot be loaded: %s', target, self.name,
                              message)
                self.failed.add(target)
                self.publish(target, 'END', message)
                board.set(TARGET, serving)
        for version, (state, _) in list(self.states.items()):
            if state == 'UNLOADING' and all(oldest >= board.serving or oldest == 0
                                            for _, oldest in everyone):
                self.publish(version, 'END')
                logging.info('version %d unloaded', version)

    # ------------------------------------------------------------------ every process

    def load(self, version):
        """Servable, retried as TF Serving's --max_num_load_retries and
        --load_retry_interval_micros say (a version copied without care can be
        incomplete at first); None when it cannot be loaded."""
        path = os.path.join(self.base_path, str(version))
        for attempt in range(self.retries + 1):
            try:
                return Servable(version, path, self.settings)
            except Exception as e:  # noqa: BLE001 -- whatever the reason: reported, retried
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.errors[version] = message
                if attempt < self.retries:
                    logging.warning('version %d of %s could not be loaded (%s); trying again '
                                    'in %g s', version, self.name, message, self.retry_seconds)
                    if self.stopping.wait(self.retry_seconds) or self.board.target != version:
                        return None
        return None

    def follow(self):
        """Loads the board's version to load, retires what is neither served nor to be
        loaded, and reports what this process holds."""
        board = self.board
        target = board.target
        if target > 0 and target not in self.servables and target != self.given_up:
            servable = self.load(target)
            if servable is None:
                self.given_up = target  # the deciding process gives it up for all
            else:
                # TensorFlow and a loaded graph are hundreds of thousands of Python objects
                # that live as long as the server; parsing a request's JSON makes tens of
                # thousands more, which set off the cyclic collector, and a full collection
                # walking them all paused requests for 180 ms. Frozen, the collector skips
                # them.
                gc.freeze()
                self.servables[target] = servable
        serving = board.serving
        for version in [v for v in self.servables if v not in (serving, board.target)]:
            self.retire(self.servables.pop(version))
        held = self.servables
        board.report(self.index, -target if target and target == self.given_up
                     else max(held, default=0), min(held, default=0))

    def retire(self, servable):
        if self.loop is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(servable.retire(), self.loop).result(120)
        else:
            servable.close()

    def get(self, name, version, label=None):
        """The Servable for a request, or ServingError as TensorFlow Serving says it
        (404: no such model or version; 400: a version label, as none is assigned)."""
        if label is not None:
            raise bad_request(f'Unrecognized servable version label: {label}')
        current = self.current
        if name != self.name or current is None:
            raise not_found(f'Servable not found for request: Latest({name})'
                            if version is None else
                            f'Servable not found for request: Specific({name}, {version})')
        if version is not None and version != current.version:
            raise not_found(f'Servable not found for request: Specific({name}, {version})')
        return current

    def status(self, name, version=None, label=None):
        """[(version, state, error message)] newest first, as TensorFlow Serving's
        GetModelStatus gives them: a version that was retired is there with END."""
        if label is not None:
            raise bad_request(f'Unrecognized servable version label: {label}')
        states = self.board.states() if name == self.name else {}
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
        version retired between choosing it and running the request: the newest is
        asked instead."""
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
        for servable in self.servables.values():
            servable.close()
