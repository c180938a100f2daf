"""The version manager: numbered SavedModels under a base path, the newest served,
polled for new ones, a new version loaded beside the old one before it takes over
(TensorFlow Serving's AspiredVersionsManager, for one model)."""

import asyncio
import gc
import threading

from absl import logging
import numpy as np

from graph_mnist import export
from graph_mnist import preprocess
from graph_mnist.serving.batching import Batcher
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


class Servable:
    """One version: its own graph and Session, one batcher per signature."""

    def __init__(self, version, path, settings):
        import tensorflow as tf
        self.version, self.path = version, path
        self.graph = tf.Graph()
        max_batch_size, timeout, threads = settings
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads[0],
                                          inter_op_parallelism_threads=threads[1])
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ['serve'], path)
        self.graph.finalize()
        self.signatures = {name: Signature(self.session, self.graph, name, definition)
                           for name, definition in meta.signature_def.items()}
        self.warm_up(max_batch_size)
        self.batchers = {name: Batcher(signature, max_batch_size, timeout,
                                       f'batcher-{version}-{name}')
                         for name, signature in self.signatures.items()}

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
    """The versions under a model base path: loads the newest, polls for newer ones."""

    def __init__(self, name, base_path, poll_seconds, settings):
        self.name, self.base_path, self.poll_seconds = name, base_path, poll_seconds
        self.settings = settings  # (max batch size, batch timeout, TF threads)
        self.lock = threading.Lock()
        self.current = None      # the Servable answering requests
        self.states = {}         # version: (state, error message), as TF Serving reports
        self.failed = set()      # versions that could not be loaded (not retried)
        self.stopping = threading.Event()
        self.poller = None
        self.loop = None  # the server's event loop, where old versions retire

    def start(self):
        self.poll()
        self.poller = threading.Thread(target=self.keep_polling, name='poller', daemon=True)
        self.poller.start()

    def keep_polling(self):
        while not self.stopping.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception as e:  # a bad moment on the disk must not stop the polling
                logging.error('polling %s: %s', self.base_path, e)

    def poll(self):
        on_disk = {v: p for v, p in export.versions(self.base_path).items()
                   if v not in self.failed}
        newest = max(on_disk, default=None)
        current = self.current
        if newest is None or (current and current.version == newest):
            return
        self.states[newest] = ('LOADING', '')
        try:
            servable = Servable(newest, on_disk[newest], self.settings)
        except Exception as e:
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            logging.error('version %d of %s cannot be loaded: %s', newest, self.name, message)
            self.failed.add(newest)
            self.states[newest] = ('END', message)
            return
        # TensorFlow and a loaded graph are hundreds of thousands of Python objects that
        # live as long as the server; parsing a request's JSON makes tens of thousands
        # more, which set off the cyclic collector, and a full collection walking them
        # all paused requests for 180 ms. Frozen, the collector skips them.
        gc.freeze()
        with self.lock:
            old, self.current = self.current, servable
            self.states[newest] = ('AVAILABLE', '')
        logging.info('serving %s version %d (%s)', self.name, newest, on_disk[newest])
        if old is not None:
            self.states[old.version] = ('UNLOADING', '')
            if self.loop is not None and self.loop.is_running():
                asyncio.run_coroutine_threadsafe(old.retire(), self.loop).result(120)
            else:
                old.close()
            self.states[old.version] = ('END', '')
            logging.info('version %d unloaded', old.version)

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
        states = dict(self.states) if name == self.name else {}
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
        if self.poller:
            self.poller.join()
        if self.current:
            self.current.close()
