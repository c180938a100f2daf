"""The gRPC API: TensorFlow Serving's PredictionService (Predict, GetModelMetadata) and
ModelService (GetModelStatus), from the `tensorflow-serving-api` package's protos: a
thin adapter over the request processor the REST API shares (core.py), on grpcio's
asyncio server (in the REST server's event loop).

Messages and codes as TensorFlow Serving gives them (predict_util.cc,
get_model_metadata_impl.cc, get_model_status_impl.cc, server_core.cc); outputs written
into the typed value fields (float_val, int64_val, ...), TensorFlow Serving's default, so
that clients reading `outputs['probabilities'].float_val` work as well as those calling
tf.make_ndarray."""

import functools

import grpc
import numpy as np

from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.json_tensor import check_shape

# numpy's kind of a value -> the TensorProto field TensorFlow's AsProtoField fills
FIELDS = {np.dtype(np.float32): 'float_val', np.dtype(np.float64): 'double_val',
          np.dtype(np.int32): 'int_val', np.dtype(np.int64): 'int64_val',
          np.dtype(np.bool_): 'bool_val', np.dtype(object): 'string_val'}


def invalid(message):
    return ServingError(400, message)  # INVALID_ARGUMENT


def model(spec):
    """(name, version or None, label or None) of a ModelSpec."""
    which = spec.WhichOneof('version_choice')
    return (spec.name, spec.version.value if which == 'version' else None,
            spec.version_label if which == 'version_label' else None)


def to_array(proto, signature, name):
    """A request's TensorProto -> numpy array, checked against the signature."""
    import tensorflow as tf
    dtype, dims = signature.inputs[name]
    if proto.dtype != dtype.as_datatype_enum:
        got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else 'no dtype'
        raise invalid(f"input '{name}' expects {dtype.name}, got {got}")
    try:
        array = tf.make_ndarray(proto)
    except (ValueError, TypeError) as e:
        raise invalid(f"input '{name}': {e}") from None
    if array.ndim == 0:
        raise invalid(f"input '{name}' must hold examples along its first axis")
    check_shape(array, dims, name)
    return array


def to_proto(value):
    """An output array -> TensorProto with its values in the typed field."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2
    proto = tensor_pb2.TensorProto(dtype=tf.dtypes.as_dtype(value.dtype).as_datatype_enum)
    for size in value.shape:
        proto.tensor_shape.dim.add(size=size)
    getattr(proto, FIELDS[value.dtype]).extend(value.ravel().tolist())
    return proto


def inputs_of(request, signature):
    """The request's inputs as arrays; TensorFlow Serving's message when their names do
    not match the signature's."""
    given, wanted = set(request.inputs), set(signature.inputs)
    if given != wanted:
        raise invalid((
            f'input size does not match signature: {len(given)}!={len(wanted)} '
            f'len({{{",".join(sorted(given))}}}) != len({{{",".join(sorted(wanted))}}}). '
            f'Sent extra: {{{",".join(sorted(given - wanted))}}}. '
            f'Missing but required: {{{",".join(sorted(wanted - given))}}}.'))
    arrays = {name: to_array(request.inputs[name], signature, name) for name in wanted}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise invalid(
            'every input must hold the same number of examples')
    return arrays, sizes.pop()


def outputs_wanted(request, signature):
    """The output_filter's aliases (all outputs when empty), checked as TensorFlow
    Serving checks them."""
    wanted, seen = list(request.output_filter) or signature.outputs, set()
    for alias in wanted:
        if alias not in signature.outputs:
            raise invalid((
                f'output tensor alias not found in signature: {alias} Outputs expected to '
                f'be in the set {{{",".join(sorted(signature.outputs))}}}.'))
        if alias in seen:
            raise invalid(
                f'duplicate output tensor alias: {alias}')
        seen.add(alias)
    return wanted


def answering(method):
    """Turns ServingError into the call's gRPC status; never a traceback to the
    client."""
    from absl import logging

    @functools.wraps(method)
    async def call(self, request, context):
        try:
            return await method(self, request, context)
        except ServingError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), e.message)
        except Exception as e:  # noqa: BLE001 -- the server goes on
            if isinstance(e, grpc.aio.AbortError):
                raise
            logging.exception('answering %s', method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f'internal error: {type(e).__name__}')
    return call


def missing(signature_name):
    return ServingError(400, f'Serving signature key "{signature_name}" not found.',
                        code='FAILED_PRECONDITION')


def spec(request):
    """(name, version or None, label or None) of the request's ModelSpec."""
    if not request.HasField('model_spec'):
        raise invalid('Missing ModelSpec')
    return model(request.model_spec)


def servicers(core):
    """(PredictionService, ModelService) servicers over a core.Core."""
    from tensorflow_serving.apis import model_service_pb2_grpc
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):

        @answering
        async def Predict(self, request, context):
            name, version, label = spec(request)
            signature_name = request.model_spec.signature_name or 'serving_default'

            def read(signature):
                inputs, n = inputs_of(request, signature)
                return inputs, n, outputs_wanted(request, signature)
            servable, outputs, wanted = await core.predict(
                'GRPC', name, version, label, signature_name, read, missing)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature_name
            for alias in wanted:
                response.outputs[alias].CopyFrom(to_proto(outputs[alias]))
            return response

        @answering
        async def GetModelMetadata(self, request, context):
            return core.metadata(*spec(request), fields=list(request.metadata_field))

    class Models(model_service_pb2_grpc.ModelServiceServicer):

        @answering
        async def GetModelStatus(self, request, context):
            return core.status(*spec(request))

    return Prediction(), Models()


def add_to(server, core):
    """Adds both services to a grpc.aio server."""
    from tensorflow_serving.apis import model_service_pb2_grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    prediction, models = servicers(core)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
