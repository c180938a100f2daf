"""The REST handler: TensorFlow Serving's URLs, verbs and status codes, and the drawing
page, as a Starlette application over a version manager."""

import asyncio
import dataclasses
import os
import re
import time
import zlib

from absl import logging

from graph_mnist.serving import json_tensor
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


def read_json(raw):
    """A request body's JSON, read by orjson; where orjson refuses it, TensorFlow
    Serving's reader takes the NaN, Infinity and -Infinity tokens as numbers, so a body
    holding them is read again by Python's json (which takes them too); any other fault
    is a 400 with orjson's reason."""
    import orjson
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if re.search(rb'\bNaN\b|\bInfinity\b', raw):
            import json
            try:
                return json.loads(raw)
            except ValueError:
                pass
        raise bad_request(f'JSON Parse error: {error}') from None


@dataclasses.dataclass(frozen=True)
class Http:
    """How the REST API answers (graph_mnist.serve's flags in brackets)."""
    max_body_bytes: int = 16 * 1024 * 1024  # [--max_body_bytes] larger: 413
    timeout_seconds: float = 30.0  # [--rest_api_timeout_in_ms] a predict past it: 504
    cors: bool = False             # [--rest_api_enable_cors_support]
    max_in_flight: int = 1000      # more requests at once: 503
    metrics_path: str = None       # [--monitoring_config_file] the Prometheus page
    metrics_dir: str = None        # where every process writes its metrics


CORS = [('Access-Control-Allow-Origin', '*'), ('Access-Control-Allow-Methods', 'POST, GET'),
        ('Access-Control-Allow-Headers', 'Content-Type')]  # TF Serving's AddCORSHeaders


def to_json_bytes(answer):
    """orjson, numpy arrays and all (OPT_SERIALIZE_NUMPY), except where an output holds
    NaN or an infinity, which orjson writes as null: there TF Serving's NaN, Infinity and
    -Infinity, as Python's json writes them."""
    import orjson
    raw = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if b'null' in raw:
        import json
        return json.dumps(json_tensor.plain(answer), separators=(',', ':')).encode()
    return raw


def gunzip(raw, limit):
    """A gzip body, at most `limit` bytes once inflated (413 beyond: a small body can
    inflate a thousandfold)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as e:
        raise bad_request(f'the gzip body cannot be read: {e}') from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise ServingError(413, f'the request body inflates to more than the {limit:,} '
                                f'bytes accepted')
    return body


def make_app(manager, http, metrics=None):
    """The Starlette application: TensorFlow Serving's REST API, the drawing page, and
    the metrics page; wrapped to answer 503 in JSON beyond max_in_flight requests."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.responses import JSONResponse
    from starlette.responses import PlainTextResponse
    from starlette.responses import Response
    from starlette.routing import Route

    max_body_bytes = http.max_body_bytes
    cors = CORS if http.cors else []
    with open(PAGE, encoding='utf-8') as f:
        page = f.read().replace('{{MODEL_NAME}}', manager.name)

    def error(status, message):
        return JSONResponse({'error': message}, status_code=status, headers=dict(cors))

    async def drain(request, limit):
        """Reads and drops the rest of a refused body (up to 64 MiB or 4 times the limit,
        for 10 s at most), so that a client that sends all before reading gets the answer
        rather than a reset connection (a lingering close, as nginx does)."""
        deadline, read, most = time.monotonic() + 10, 0, max(4 * limit, 64 * 1024 * 1024)
        try:
            async for chunk in request.stream():
                read += len(chunk)
                if read > most or time.monotonic() > deadline:
                    break
        except Exception:  # noqa: BLE001 -- the client went away: nothing to answer
            pass

    async def read_body(request):
        declared = request.headers.get('content-length')
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            await drain(request, max_body_bytes)
            raise ServingError(413, f'the request body is {int(declared):,} bytes, more '
                                    f'than the {max_body_bytes:,} accepted')
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                await drain(request, max_body_bytes)
                raise ServingError(413, f'the request body is more than the '
                                        f'{max_body_bytes:,} bytes accepted')
            chunks.append(chunk)
        raw = b''.join(chunks)
        encoding = request.headers.get('content-encoding', 'identity').strip().lower()
        if encoding == 'gzip':  # as TF Serving's HTTP server reads it
            return gunzip(raw, max_body_bytes)
        if encoding != 'identity':
            raise bad_request(f'Content-Encoding {encoding} is not supported (gzip is)')
        return raw

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
        body = read_json(await read_body(request))
        signature_name = (body.get('signature_name') or 'serving_default'
                          if isinstance(body, dict) else 'serving_default')
        if not isinstance(signature_name, str):
            raise bad_request(f'"signature_name" must be a string, got '
                              f'{type(signature_name).__name__}')

        def read(signature):
            inputs, n, row = parse_predict(body, signature)
            return inputs, n, row
        try:  # asyncio.timeout, not wait_for: no task of its own per request
            async with asyncio.timeout(http.timeout_seconds):
                _, outputs, row = await manager.predict(name, version, label,
                                                        signature_name, read, missing)
        except TimeoutError:
            raise ServingError(504, f'Deadline Exceeded: no answer within '
                                    f'{http.timeout_seconds * 1000:g} ms '
                                    f'(--rest_api_timeout_in_ms)') from None
        return format_predict(outputs, row)

    async def api(request):
        path = request.url.path
        found = ROUTE.match(path)
        started, counted = time.perf_counter(), None
        try:
            if not found:
                raise malformed(request)
            name, verb = found['name'], found['verb']
            version = int(found['version']) if found['version'] else None
            label = found['label']
            if request.method == 'OPTIONS':  # a CORS preflight, as TF Serving answers it
                if not re.match(r'https?://', request.headers.get('origin', '')):
                    raise bad_request('Origin header is missing in CORS preflight')
                return Response(b'', headers=dict(cors))
            if request.method == 'GET' and verb is None:
                answer = (metadata if found['metadata'] else status)(name, version, label)
            elif request.method == 'POST' and verb == 'predict' and not found['metadata']:
                counted = name
                answer = await predict(request, name, version, label)
            elif request.method == 'POST' and verb in ('classify', 'regress'):
                raise bad_request(f'{verb} is not offered: these models have predict '
                                  f'signatures only')
            else:
                raise malformed(request)
            if counted and metrics:
                metrics.answered(counted, 'predict', 'REST', 'OK', started)
            return Response(to_json_bytes(answer), media_type='application/json',
                            headers=dict(cors))
        except ServingError as e:
            if counted and metrics:
                metrics.answered(counted, 'predict', 'REST', e.code, started)
            return error(e.status, e.message)
        except Exception as e:  # noqa: BLE001 -- never a traceback to a client; it goes on
            logging.exception('answering %s %s', request.method, path)
            if counted and metrics:
                metrics.answered(counted, 'predict', 'REST', 'INTERNAL', started)
            return error(500, f'internal error: {type(e).__name__}')

    async def home(request):
        return HTMLResponse(page)

    async def prometheus(request):
        from graph_mnist.serving.metrics import page as metrics_page
        text = await asyncio.get_running_loop().run_in_executor(
            None, metrics_page, http.metrics_dir)
        return PlainTextResponse(text, media_type='text/plain; version=0.0.4')

    async def not_found(request, exc):
        e = malformed(request)
        return error(e.status, e.message)

    routes = [Route('/', home), Route('/v1/models/{rest:path}', api,
                                      methods=['GET', 'POST', 'OPTIONS'])]
    if http.metrics_path and http.metrics_dir:
        routes.append(Route(http.metrics_path, prometheus))
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return limited(app, http.max_in_flight)


def limited(app, most):
    """The ASGI application, answering 503 in TF Serving's JSON ({"error": ...}) to the
    requests beyond `most` at once, rather than uvicorn's plain-text 503."""
    in_flight = 0

    async def guarded(scope, receive, send):
        nonlocal in_flight
        if scope['type'] != 'http':
            return await app(scope, receive, send)
        if in_flight >= most:
            body = b'{"error":"the server is overloaded: more than %d requests at once; ' \
                   b'try again"}' % most
            await send({'type': 'http.response.start', 'status': 503, 'headers': [
                (b'content-type', b'application/json'),
                (b'content-length', str(len(body)).encode())]})
            return await send({'type': 'http.response.body', 'body': body})
        in_flight += 1
        try:
            return await app(scope, receive, send)
        finally:
            in_flight -= 1
    return guarded
