"""The REST handler: TensorFlow Serving's URLs, verbs and status codes, and the drawing
page, as a Starlette application over a version manager."""

import os
import re

from absl import logging

from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.errors import bad_request
from graph_mnist.serving.json_tensor import format_predict
from graph_mnist.serving.json_tensor import parse_predict

PAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'static', 'draw.html')


ROUTE = re.compile(r'^/v1/models/(?P<name>[^/:]+)'
                   r'(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?'
                   r'(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$')


def malformed(request):
    """A request TensorFlow Serving's API has no answer for: under /v1/ (a wrong verb, a
    GET on :predict, a PUT), 400 as TensorFlow Serving says; elsewhere, 404."""
    path = request.url.path
    return ServingError(400 if path.startswith('/v1/') else 404,
                        f'Malformed request: {request.method} {path}')


def _with_nan_and_infinity(raw, error):
    """A body orjson refused: TensorFlow Serving's JSON reader takes the NaN, Infinity
    and -Infinity tokens as numbers, so a body holding them is read again by Python's
    json (which takes them too); any other fault is a 400 with orjson's reason."""
    import json
    if re.search(rb'\bNaN\b|\bInfinity\b', raw):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    raise bad_request(f'JSON Parse error: {error}') from None


def make_app(manager, max_body_bytes):
    """The Starlette application: TensorFlow Serving's REST API and the drawing page."""
    import orjson
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    with open(PAGE, encoding='utf-8') as f:
        page = f.read().replace('{{MODEL_NAME}}', manager.name)

    def error(status, message):
        return JSONResponse({'error': message}, status_code=status)

    async def read_body(request):
        declared = request.headers.get('content-length')
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise ServingError(413, f'the request body is {int(declared):,} bytes, more '
                                    f'than the {max_body_bytes:,} accepted')
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise ServingError(413, f'the request body is more than the '
                                        f'{max_body_bytes:,} bytes accepted')
            chunks.append(chunk)
        return b''.join(chunks)

    def status(name, version, label):
        return {'model_version_status': [
            {'version': str(v), 'state': state,
             'status': {'error_code': 'OK' if not message else 'UNKNOWN',
                        'error_message': message}}
            for v, state, message in manager.status(name, version, label)]}

    def metadata(name, version, label):
        servable = manager.get(name, version, label)
        return {'model_spec': {'name': name, 'signature_name': '',
                               'version': str(servable.version)},
                'metadata': {'signature_def': {'signature_def': {
                    key: s.definition for key, s in servable.signatures.items()}}}}

    def missing(signature_name):
        return bad_request(f'Serving signature name: "{signature_name}" not found in '
                           f'signature def')

    async def predict(request, name, version, label):
        raw = await read_body(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            body = _with_nan_and_infinity(raw, e)
        signature_name = (body.get('signature_name') or 'serving_default'
                          if isinstance(body, dict) else 'serving_default')
        if not isinstance(signature_name, str):
            raise bad_request(f'"signature_name" must be a string, got '
                              f'{type(signature_name).__name__}')

        def read(signature):
            inputs, n, row = parse_predict(body, signature)
            return inputs, n, row
        _, outputs, row = await manager.predict(name, version, label, signature_name, read,
                                                missing)
        return format_predict(outputs, row)

    async def api(request):
        path = request.url.path
        found = ROUTE.match(path)
        try:
            if not found:
                raise malformed(request)
            name, verb = found['name'], found['verb']
            version = int(found['version']) if found['version'] else None
            label = found['label']
            if request.method == 'GET' and verb is None:
                answer = (metadata if found['metadata'] else status)(name, version, label)
            elif request.method == 'POST' and verb == 'predict' and not found['metadata']:
                answer = await predict(request, name, version, label)
            elif request.method == 'POST' and verb in ('classify', 'regress'):
                raise bad_request(f'{verb} is not offered: these models have predict '
                                  f'signatures only')
            else:
                raise malformed(request)
            return Response(orjson.dumps(answer),
                            media_type='application/json')
        except ServingError as e:
            return error(e.status, e.message)
        except Exception as e:  # never a traceback to the client; the server goes on
            logging.exception('answering %s %s', request.method, path)
            return error(500, f'internal error: {type(e).__name__}')

    async def home(request):
        return HTMLResponse(page)

    async def not_found(request, exc):
        e = malformed(request)
        return error(e.status, e.message)

    return Starlette(routes=[Route('/', home), Route('/v1/models/{rest:path}', api,
                                                     methods=['GET', 'POST'])],
                     exception_handlers={404: not_found, 405: not_found})
