"""The request processor both transports share, knowing neither HTTP nor gRPC: model
status, model metadata and predict over the versions this process holds, and their
errors (errors.ServingError: an HTTP status and a gRPC code). Status and metadata are
TensorFlow Serving's messages (GetModelStatusResponse, GetModelMetadataResponse), built
here once: gRPC sends them as they are, and the REST API writes them as JSON, as TF
Serving's HttpRestApiHandler does.

`process(method, path, body)` is TF Serving's HttpRestApiHandler::ProcessRequest: the
REST API's URLs, verbs and JSON; rest.py only carries bytes to and from it."""

import asyncio
import re
import time

from absl import logging

from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.errors import bad_request
from graph_mnist.serving.json_tensor import format_predict
from graph_mnist.serving.json_tensor import parse_predict
from graph_mnist.serving.json_tensor import read_json
from graph_mnist.serving.json_tensor import to_json_bytes

ROUTE = re.compile(r'^/v1/models/(?P<name>[^/:]+)'
                   r'(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?'
                   r'(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$')
API = {'REST': 'predict', 'GRPC': 'Predict'}  # the latency's API label, as TF Serving's


def malformed(method, path):
    """A request TensorFlow Serving's API has no answer for: under /v1/ (a wrong verb, a
    GET on :predict, a PUT), 400 as TensorFlow Serving says; elsewhere, 404."""
    return ServingError(400 if path.startswith('/v1/') else 404,
                        f'Malformed request: {method} {path}')


def json_message(message):
    from google.protobuf import json_format
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


class Core:
    """versions: versions.Versions; metrics: metrics.Metrics or None; a REST predict not
    answered within rest_timeout_seconds (None: no limit; gRPC's clients set their own
    deadlines) fails with 504, as --rest_api_timeout_in_ms says."""

    def __init__(self, versions, metrics=None, rest_timeout_seconds=30.0):
        self.versions, self.metrics = versions, metrics
        self.rest_timeout_seconds = rest_timeout_seconds

    def status(self, name, version=None, label=None):
        """GetModelStatusResponse: the model's versions, newest first."""
        from tensorflow_serving.apis import get_model_status_pb2
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, message in self.versions.status(name, version, label):
            status = response.model_version_status.add(
                version=v, state=getattr(get_model_status_pb2.ModelVersionStatus, state))
            status.status.error_code = 0 if not message else 2  # OK, UNKNOWN
            status.status.error_message = message
        return response

    def metadata(self, name, version=None, label=None, fields=('signature_def',)):
        """GetModelMetadataResponse: the version's signatures."""
        from tensorflow_serving.apis import get_model_metadata_pb2
        if not fields:
            raise bad_request('GetModelMetadataRequest must specify at least one '
                              'metadata_field')
        for field in fields:
            if field != 'signature_def':
                raise bad_request(f'Metadata field {field} is not supported')
        servable = self.versions.get(name, version, label)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signatures.items():
            signatures.signature_def[key].CopyFrom(signature.proto)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        response.metadata['signature_def'].Pack(signatures)
        return response

    async def predict(self, entrypoint, name, version, label, signature_name, read, missing,
                      timeout_seconds=None):
        """(servable, outputs, what read returned beside the inputs) of one predict
        call through `entrypoint` ('REST' or 'GRPC'), counted in the metrics by its code.
        read(signature) -> (inputs, examples, extra); missing(signature_name) -> the
        error for a signature the version lacks (each API words it its own way)."""
        started, code = time.perf_counter(), 'OK'
        try:  # asyncio.timeout, not wait_for: no task of its own per request
            async with asyncio.timeout(timeout_seconds):
                return await self.versions.predict(name, version, label, signature_name,
                                                   read, missing)
        except TimeoutError:
            code = 'DEADLINE_EXCEEDED'
            raise ServingError(504, f'Deadline Exceeded: no answer within '
                                    f'{timeout_seconds * 1000:g} ms '
                                    f'(--rest_api_timeout_in_ms)') from None
        except ServingError as e:
            code = e.code
            raise
        except BaseException:
            code = 'INTERNAL'
            raise
        finally:
            if self.metrics is not None:
                self.metrics.answered(name, API[entrypoint], entrypoint, code, started)

    async def process(self, method, path, body):
        """(HTTP status, JSON body) of one REST API request: its method, its path, and
        its body (bytes)."""
        try:
            return 200, to_json_bytes(await self.answer(method, path, body))
        except ServingError as e:
            return e.status, to_json_bytes({'error': e.message})
        except Exception as e:  # noqa: BLE001 -- never a traceback to a client; it goes on
            logging.exception('answering %s %s', method, path)
            return 500, to_json_bytes({'error': f'internal error: {type(e).__name__}'})

    async def answer(self, method, path, body):
        found = ROUTE.match(path)
        if not found:
            raise malformed(method, path)
        name, verb, label = found['name'], found['verb'], found['label']
        version = int(found['version']) if found['version'] else None
        if method == 'GET' and verb is None:
            if found['metadata']:
                response = self.metadata(name, version, label)
                return {'model_spec': json_message(response.model_spec), 'metadata': {
                    key: json_message(self.unpacked(value))
                    for key, value in response.metadata.items()}}
            return json_message(self.status(name, version, label))
        if method == 'POST' and verb == 'predict' and not found['metadata']:
            return await self.predict_json(name, version, label, read_json(body))
        if method == 'POST' and verb in ('classify', 'regress'):
            raise bad_request(f'{verb} is not offered: these models have predict signatures '
                              f'only')
        raise malformed(method, path)

    @staticmethod
    def unpacked(value):
        from tensorflow_serving.apis import get_model_metadata_pb2
        signatures = get_model_metadata_pb2.SignatureDefMap()
        value.Unpack(signatures)
        return signatures

    async def predict_json(self, name, version, label, body):
        signature_name = (body.get('signature_name') or 'serving_default'
                          if isinstance(body, dict) else 'serving_default')
        if not isinstance(signature_name, str):
            raise bad_request(f'"signature_name" must be a string, got '
                              f'{type(signature_name).__name__}')
        _, outputs, row = await self.predict(
            'REST', name, version, label, signature_name,
            lambda signature: parse_predict(body, signature), missing_in_json,
            self.rest_timeout_seconds)
        return format_predict(outputs, row)


def missing_in_json(signature_name):
    return bad_request(f'Serving signature name: "{signature_name}" not found in signature '
                       f'def')
