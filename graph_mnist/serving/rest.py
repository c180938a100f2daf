"""The REST API's transport: HTTP as TensorFlow Serving's HTTP server carries it (a
body limit, gzip bodies, CORS, 503 beyond the requests in flight), as a Starlette
application that hands each request's method, path and body to the request processor
(core.Core.process); and the drawing page and the metrics page."""

import asyncio
import dataclasses
import os
import re
import time
import zlib

from graph_mnist.serving.core import malformed
from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.errors import bad_request

PAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'static', 'draw.html')


@dataclasses.dataclass(frozen=True)
class Http:
    """How the REST API answers (graph_mnist.serve's flags in brackets)."""
    max_body_bytes: int = 16 * 1024 * 1024  # [--max_body_bytes] larger: 413
    cors: bool = False             # [--rest_api_enable_cors_support]
    max_in_flight: int = 1000      # more requests at once: 503
    metrics_path: str = None       # [--monitoring_config_file] the Prometheus page
    metrics_dir: str = None        # where every process writes its metrics


CORS = [('Access-Control-Allow-Origin', '*'), ('Access-Control-Allow-Methods', 'POST, GET'),
        ('Access-Control-Allow-Headers', 'Content-Type')]  # TF Serving's AddCORSHeaders


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


async def read_body(request, limit):
    """The request's body, at most `limit` bytes (413 beyond), inflated if gzipped."""
    declared = request.headers.get('content-length')
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await drain(request, limit)
        raise ServingError(413, f'the request body is {int(declared):,} bytes, more than '
                                f'the {limit:,} accepted')
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await drain(request, limit)
            raise ServingError(413, f'the request body is more than the {limit:,} bytes '
                                    f'accepted')
        chunks.append(chunk)
    raw = b''.join(chunks)
    encoding = request.headers.get('content-encoding', 'identity').strip().lower()
    if encoding == 'gzip':  # as TF Serving's HTTP server reads it
        return gunzip(raw, limit)
    if encoding != 'identity':
        raise bad_request(f'Content-Encoding {encoding} is not supported (gzip is)')
    return raw


def endpoint(core, http):
    """The REST API's endpoint: the body read, then core.process; CORS as asked."""
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response
    headers = dict(CORS if http.cors else [])

    async def api(request):
        method, path = request.method, request.url.path
        if method == 'OPTIONS':  # a CORS preflight, as TF Serving answers it
            if not re.match(r'https?://', request.headers.get('origin', '')):
                return error(bad_request('Origin header is missing in CORS preflight'),
                             headers)
            return Response(b'', headers=headers)
        try:
            body = await read_body(request, http.max_body_bytes) if method == 'POST' else b''
        except ServingError as e:
            return error(e, headers)
        except ClientDisconnect:  # gone before its body came: no one to answer
            return Response(b'', status_code=400)
        status, answer = await core.process(method, path, body)
        return Response(answer, status_code=status, media_type='application/json',
                        headers=headers)
    return api


def error(e, headers):
    from starlette.responses import JSONResponse
    return JSONResponse({'error': e.message}, status_code=e.status, headers=headers)


def make_app(core, http, model_name):
    """The Starlette application: TensorFlow Serving's REST API over core.Core, the
    drawing page (asking `model_name`), and the metrics page; wrapped to answer 503 in
    JSON beyond max_in_flight requests."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    with open(PAGE, encoding='utf-8') as f:
        page = f.read().replace('{{MODEL_NAME}}', model_name)

    async def home(request):
        return HTMLResponse(page)

    async def prometheus(request):
        from graph_mnist.serving.metrics import page as metrics_page
        text = await asyncio.get_running_loop().run_in_executor(
            None, metrics_page, http.metrics_dir)
        return PlainTextResponse(text, media_type='text/plain; version=0.0.4')

    async def unrouted(request, exc):
        return error(malformed(request.method, request.url.path),
                     dict(CORS if http.cors else []))

    routes = [Route('/', home), Route('/v1/models/{rest:path}', endpoint(core, http),
                                      methods=['GET', 'POST', 'OPTIONS'])]
    if http.metrics_path and http.metrics_dir:
        routes.append(Route(http.metrics_path, prometheus))
    app = Starlette(routes=routes, exception_handlers={404: unrouted, 405: unrouted})
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
