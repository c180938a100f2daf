"""One version of a model, loaded: its own graph and Session, its signatures as
callables, one batcher per signature (TensorFlow Serving's servable), and the settings
every version is run with."""

import dataclasses
import functools
import os

from absl import logging
import numpy as np

from graph_mnist import export
from graph_mnist import preprocess
from graph_mnist.serving.batching import MAX_ENQUEUED_BATCHES
from graph_mnist.serving.batching import Batcher
from graph_mnist.serving.errors import bad_request


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
    batch_threads: int = 1   # batches run at once per signature (num_batch_threads)
    thread_pool_name: str = None  # the batch threads' name (thread_pool_name)


class Servable:
    """One version of `model`: its own graph and Session, one batcher per signature."""

    def __init__(self, model, version, path, settings):
        import tensorflow as tf
        self.model, self.version, self.path = model, version, path
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
                                       settings.thread_pool_name or
                                       f'batcher-{model}-{version}-{name}',
                                       settings.max_enqueued_batches,
                                       functools.partial(metrics.batched, model, name)
                                       if metrics else None, settings.batch_threads)
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
