r"""Serves exported networks with TensorFlow Serving's REST API, and a page to draw on.

    python -m graph_mnist.serve --model_base_path=exported/conv_dropout
    # then open http://127.0.0.1:8501/ and draw a digit, or:
    curl -d '{"signature_name": "from_image", "instances": [{"b64": "'$(base64 -w0 digit.png)'"}]}' \
        http://127.0.0.1:8501/v1/models/mnist:predict

The API is TensorFlow Serving's (its flag names, paths, JSON and status codes), so a
client written for TensorFlow Serving works here unchanged, and the same SavedModel runs
unchanged in a real TensorFlow Serving:

    GET  /v1/models/{name}[/versions/{v}]              status of the versions
    GET  /v1/models/{name}[/versions/{v}]/metadata     the signatures
    POST /v1/models/{name}[/versions/{v}]:predict      {"instances": [...]} -> {"predictions": ...}
                                                       {"inputs": ...}      -> {"outputs": ...}
    GET  /                                             the drawing page

Versions: --model_base_path holds numbered SavedModel directories (graph_mnist.export
writes the next one each time). The newest is served; the base path is polled every
--file_system_poll_wait_seconds, and a new version is loaded beside the old one, then
takes over; the old one finishes what it was given before it is closed. No request
fails in between.

Batching: one batch at a time per signature; the requests that arrive while it runs go
next, together, in one Session call (up to --max_batch_size images). A lone request never
waits; a crowd is batched (--batch_timeout_micros adds a wait for company).

Processes: one per core (--rest_api_num_processes), each with the model loaded, all on
the one port (SO_REUSEPORT); the first checks the flags, binds, starts the others and
announces the address once all are ready; they end with it.

Bad input gets TensorFlow Serving's status code and {"error": "..."}; the server goes on.
It listens on 127.0.0.1 unless --host says otherwise. Built on Starlette and uvicorn
(the `serve` extra: pip install -e '.[serve]').
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import gc
import itertools
import os
import re
import socket
import threading
import time

from absl import flags
from absl import logging
import numpy as np

from graph_mnist import export
from graph_mnist import preprocess
from graph_mnist.errors import UserError

PAGE = os.path.join(os.path.dirname(__file__), 'static', 'draw.html')


class ServingError(Exception):
    """A request that cannot be answered: its HTTP status and TensorFlow Serving's message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message):
    return ServingError(400, message)


class Unloaded(Exception):
    """The version was unloaded between choosing it and giving it the request."""


# ----------------------------------------------------------------------------- batching

class Batcher:
    """Runs the requests given to one signature, several at a time, one batch at a time.

    `await batcher(inputs, n)` from the event loop; run(inputs) -> outputs, both {name:
    array with the examples along axis 0}, runs in the batcher's own thread (a Session
    call releases the interpreter's lock). While one batch runs, the requests that arrive
    wait together and go next as one batch of up to `max_batch_size` examples: a lone
    request never waits, a crowd is batched. With `timeout` > 0 a batch smaller than the
    most also waits that long for company (TensorFlow Serving's batch_timeout_micros).
    Refused input fails the batch: it is then run request by request, so that only the
    bad request fails."""

    def __init__(self, run, max_batch_size, timeout, name):
        self.run, self.max_batch_size, self.timeout = run, max_batch_size, timeout
        self.waiting = collections.deque()
        self.draining = None  # the task running batches, while there are any
        self.stopped = False
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    async def __call__(self, inputs, n):
        if self.stopped:
            raise Unloaded()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((inputs, n, future))
        if self.draining is None:
            self.draining = loop.create_task(self.drain())
        return await future

    async def drain(self):
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                if self.timeout and self.size() < self.max_batch_size:
                    await asyncio.sleep(self.timeout)
                batch = self.take()
                results = await loop.run_in_executor(self.thread, self.answer, batch)
                for (_, _, future), (value, error) in zip(batch, results):
                    if future.done():  # the client went away
                        continue
                    if error is None:
                        future.set_result(value)
                    else:
                        future.set_exception(error)
        finally:
            self.draining = None

    def size(self):
        return sum(n for _, n, _ in self.waiting)

    def take(self):
        batch, size = [self.waiting.popleft()], 0
        size = batch[0][1]
        while self.waiting and size + self.waiting[0][1] <= self.max_batch_size:
            batch.append(self.waiting.popleft())
            size += batch[-1][1]
        return batch

    def answer(self, batch):
        """[(outputs, None) or (None, error)] for the requests of a batch (its thread)."""
        def alone(inputs):
            try:
                return self.run(inputs), None
            except Exception as e:  # the request's own failure, reported to it alone
                return None, e
        if len(batch) == 1:
            return [alone(batch[0][0])]
        joined = {name: np.concatenate([inputs[name] for inputs, _, _ in batch])
                  for name in batch[0][0]}
        outputs, error = alone(joined)
        if error is not None:  # one request refused: find it, answer the others
            return [alone(inputs) for inputs, _, _ in batch]
        results, start = [], 0
        for _, n, _ in batch:
            results.append(({name: value[start:start + n] for name, value in outputs.items()},
                            None))
            start += n
        return results

    async def stop(self):
        """No new requests; those given are answered first."""
        self.stopped = True
        while self.draining is not None:
            await asyncio.sleep(0.01)
        self.thread.shutdown()


# ----------------------------------------------------------------------------- versions

class Signature:
    """One signature of a loaded SavedModel: its inputs and outputs, a callable."""

    def __init__(self, session, graph, name, definition):
        from google.protobuf import json_format
        import tensorflow as tf
        self.name = name
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

    def get(self, name, version):
        """The Servable for a request, or ServingError 404 as TensorFlow Serving says it."""
        current = self.current
        if name != self.name or current is None:
            raise ServingError(404, f'Servable not found for request: Latest({name})'
                               if version is None else
                               f'Servable not found for request: Specific({name}, {version})')
        if version is not None and version != current.version:
            raise ServingError(404, f'Servable not found for request: Specific({name}, '
                                    f'{version})')
        return current

    def stop(self):
        self.stopping.set()
        if self.poller:
            self.poller.join()
        if self.current:
            self.current.close()


# ----------------------------------------------------------------------------- requests

def decode_binary(value, where):
    """A DT_STRING value: {"b64": "..."} (decoded) or a plain string."""
    if isinstance(value, dict):
        if set(value) != {'b64'} or not isinstance(value['b64'], str):
            raise bad_request(f'{where}: a binary value is {{"b64": "<base64>"}}')
        try:
            return base64.b64decode(value['b64'], validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f'{where}: "b64" holds no valid base64') from None
    if isinstance(value, str):
        return value.encode('utf-8')
    raise bad_request(f'{where}: expected {{"b64": "<base64>"}} or a string, '
                      f'got {type(value).__name__}')


def to_array(values, dtype, dims, name):
    """JSON values of one input (a list of examples) -> numpy array,
    checked against the signature's dtype and shape."""
    example = dims[1:] if dims else None
    if dtype.name == 'string':
        if not isinstance(values, list):
            raise bad_request(f"'{name}' expects a list of binary values")
        array = np.array([decode_binary(v, f"'{name}'[{i}]") for i, v in enumerate(values)],
                         dtype=object)
    else:
        try:
            array = numbers(values, dims, dtype.as_numpy_dtype)
        except (ValueError, TypeError, OverflowError):
            raise bad_request(f"'{name}' expects {dtype.name} numbers, every example of "
                              f"shape {format_shape(example)}") from None
    if example is not None and (array.ndim != len(dims) or any(
            want is not None and want != got for want, got in zip(example, array.shape[1:]))):
        raise bad_request(f"'{name}' expects examples of shape {format_shape(example)}, got "
                          f"{format_shape(array.shape[1:])}")
    return array


def numbers(values, dims, numpy_dtype):
    """Nested JSON lists of numbers -> array. When the signature's shape is known, the
    lists are checked level by level and flattened, and numpy converts one flat list:
    twice as fast as np.asarray on the nested lists (28 x 28 lists of one number each),
    which was a fifth of a single-image request's time. Otherwise np.asarray."""
    if not dims or None in dims[1:]:
        return np.asarray(values, dtype=numpy_dtype)
    try:
        flat = values
        for size in dims[1:]:
            if set(map(len, flat)) != {size}:  # TypeError where a number stands for a list
                raise ValueError('not of the signature\'s shape')
            flat = list(itertools.chain.from_iterable(flat))
        return np.array(flat, dtype=numpy_dtype).reshape(len(values), *dims[1:])
    except (ValueError, TypeError):  # wrong: np.asarray says how (or raises)
        return np.asarray(values, dtype=numpy_dtype)


def format_shape(dims):
    return '[' + ', '.join('?' if d is None else str(d) for d in dims) + ']' if dims \
        is not None else 'any'


def parse_predict(body, signature):
    """A :predict request body -> ({input: array}, examples, row format?)."""
    if not isinstance(body, dict):
        raise bad_request('the request body must be a JSON object')
    has_instances, has_inputs = 'instances' in body, 'inputs' in body
    if has_instances and has_inputs:
        raise bad_request("Not formatted correctly expecting only one of 'inputs' or "
                          "'instances' keys to exist")
    if not (has_instances or has_inputs):
        raise bad_request("Missing 'inputs' or 'instances' key")
    names = list(signature.inputs)
    if has_instances:
        instances = body['instances']
        if not isinstance(instances, list):
            raise bad_request("'instances' must be a list, one element per example")
        if not instances:
            raise bad_request("No values in 'instances' array")
        if len(names) == 1 and not (isinstance(instances[0], dict) and
                                    set(instances[0]) == {names[0]}):
            columns = {names[0]: instances}
        else:
            if not all(isinstance(x, dict) and set(x) == set(names) for x in instances):
                raise bad_request(f"every element of 'instances' must be an object with "
                                  f"the keys {names}")
            columns = {name: [x[name] for x in instances] for name in names}
    else:
        given = body['inputs']
        if len(names) == 1 and not (isinstance(given, dict) and set(given) == {names[0]}):
            given = {names[0]: given}
        if not isinstance(given, dict) or set(given) != set(names):
            raise bad_request(f"'inputs' must hold the inputs {names}")
        columns = given
        for name, value in columns.items():
            if not isinstance(value, list) or not value:
                raise bad_request(f"No values in 'inputs' for '{name}'")
    arrays = {name: to_array(columns[name], *signature.inputs[name], name)
              for name in names}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise bad_request('every input must hold the same number of examples')
    return arrays, sizes.pop(), has_instances


def format_predict(outputs, row):
    if row:
        if len(outputs) == 1:
            return {'predictions': next(iter(outputs.values())).tolist()}
        lists = {name: value.tolist() for name, value in outputs.items()}
        n = len(next(iter(lists.values())))
        return {'predictions': [{name: lists[name][i] for name in lists} for i in range(n)]}
    if len(outputs) == 1:
        return {'outputs': next(iter(outputs.values())).tolist()}
    return {'outputs': {name: value.tolist() for name, value in outputs.items()}}


# ----------------------------------------------------------------------------- the app

ROUTE = re.compile(r'^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?'
                   r'(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$')


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

    def status(name, version):
        manager.get(name, version)  # 404 when unknown
        versions = [version] if version is not None else sorted(manager.states, reverse=True)
        return {'model_version_status': [
            {'version': str(v), 'state': manager.states[v][0],
             'status': {'error_code': 'OK' if not manager.states[v][1] else 'UNKNOWN',
                        'error_message': manager.states[v][1]}} for v in versions]}

    def metadata(name, version):
        servable = manager.get(name, version)
        return {'model_spec': {'name': name, 'signature_name': '',
                               'version': str(servable.version)},
                'metadata': {'signature_def': {'signature_def': {
                    key: s.definition for key, s in servable.signatures.items()}}}}

    async def predict(request, name, version):
        raw = await read_body(request)
        try:
            body = orjson.loads(raw)  # strict JSON: NaN and Infinity are refused
        except orjson.JSONDecodeError as e:
            if re.search(rb'\bNaN\b|\bInfinity\b', raw):
                raise bad_request('JSON Parse error: NaN and Infinity are not numbers in '
                                  'JSON') from None
            raise bad_request(f'JSON Parse error: {e}') from None
        signature_name = (body.get('signature_name') or 'serving_default'
                          if isinstance(body, dict) else 'serving_default')
        for attempt in range(3):  # the version retired meanwhile: ask the newest
            servable = manager.get(name, version)
            signature = servable.signatures.get(signature_name)
            if signature is None:
                raise bad_request(f'Serving signature name: "{signature_name}" not '
                                  f'found in signature def')
            inputs, n, row = parse_predict(body, signature)
            try:
                outputs = await servable.batchers[signature_name](inputs, n)
                return format_predict(outputs, row)
            except Unloaded:
                continue
        raise ServingError(503, 'the model is being reloaded; try again')

    async def api(request):
        path = request.url.path
        found = ROUTE.match(path)
        try:
            if not found:
                raise ServingError(404, f'Malformed request: {request.method} {path}')
            name, verb = found['name'], found['verb']
            version = int(found['version']) if found['version'] else None
            if request.method == 'GET' and verb is None:
                answer = metadata(name, version) if found['metadata'] else status(name, version)
            elif request.method == 'POST' and verb == 'predict' and not found['metadata']:
                answer = await predict(request, name, version)
            elif request.method == 'POST' and verb in ('classify', 'regress'):
                raise bad_request(f'{verb} is not offered: these models have predict '
                                  f'signatures only')
            else:
                raise ServingError(404, f'Malformed request: {request.method} {path}')
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
        return error(404, f'Malformed request: {request.method} {request.url.path}')

    @contextlib.asynccontextmanager
    async def lifespan(app):
        manager.loop = asyncio.get_running_loop()  # where retiring versions finish
        yield

    return Starlette(routes=[Route('/', home), Route('/v1/models/{rest:path}', api,
                                                     methods=['GET', 'POST'])],
                     exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)


# ----------------------------------------------------------------------------- a server to drive

class Subprocess:
    """`python -m graph_mnist.serve` in a process of its own on a free loopback port, for
    tests, the load benchmark and the screenshot: `with Subprocess(base) as server:
    server.url`. Stopped (SIGTERM, then SIGKILL) when the block ends, however it ends."""

    LISTENING = re.compile(r'listening on (http://[^/\s]+)/')

    def __init__(self, model_base_path, *flags, timeout=120):
        import subprocess
        import sys
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'graph_mnist.serve', f'--model_base_path={model_base_path}',
             '--host=127.0.0.1', '--rest_api_port=0', *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found = threading.Event()

        def drain():  # keep reading, or the server would block on a full pipe
            for line in self.process.stderr:
                self.lines.append(line)
                if self.LISTENING.search(line):
                    found.set()
            found.set()
        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError('the server did not start:\n' + ''.join(self.lines[-20:]))
        self.url = next(m[1] for m in map(self.LISTENING.search, self.lines) if m)

    def log(self):
        return ''.join(self.lines)

    def stop(self):
        import subprocess
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ----------------------------------------------------------------------------- main

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('model_base_path', None, 'The model base path: numbered SavedModel '
                        'versions, as graph_mnist.export writes them.')
    flags.DEFINE_string('model_name', 'mnist', 'The name in /v1/models/{name}.')
    flags.DEFINE_integer('rest_api_port', 8501, 'The HTTP port (0: any free one).',
                         lower_bound=0, upper_bound=65535)
    flags.DEFINE_string('host', '127.0.0.1', 'The address to listen on; 0.0.0.0 opens the '
                        'server to the network.')
    flags.DEFINE_float('file_system_poll_wait_seconds', 1.0, 'How often the base path is '
                       'looked at for new versions.', lower_bound=0.05)
    flags.DEFINE_integer('max_batch_size', 64, 'Most examples run in one Session call.',
                         lower_bound=1)
    flags.DEFINE_integer('batch_timeout_micros', 0, 'How long a batch smaller than '
                         '--max_batch_size waits for more requests (0: it goes as soon as '
                         'the previous batch is done).', lower_bound=0)
    flags.DEFINE_integer('max_body_bytes', 16 * 1024 * 1024, 'Larger request bodies get 413.',
                         lower_bound=1024)
    flags.DEFINE_integer('rest_api_num_processes', 0, 'Processes answering requests, each '
                         'with the model loaded, all on the one port (0: one per core). '
                         'Python runs one thread at a time per process; TensorFlow Serving '
                         'uses threads for the same.', lower_bound=0)
    flags.DEFINE_integer('tensorflow_intra_op_parallelism', 0, 'Threads of one operation '
                         '(0: the cores shared among the processes, at least 1).',
                         lower_bound=0)
    flags.DEFINE_integer('tensorflow_inter_op_parallelism', 0, 'Operations run at once '
                         '(0: as --tensorflow_intra_op_parallelism).', lower_bound=0)
    flags.DEFINE_bool('other_process', False, 'Internal: one of the processes the first '
                      'one started, on its port.')
    flags.DEFINE_integer('ready_fd', None, 'Internal: where another process says it is '
                         'ready.')
    flags.mark_flag_as_required('model_base_path')


def listen(host, port):
    """A bound, listening socket, or one clear error. SO_REUSEPORT: the other serving
    processes (same user) listen on the same port, and the kernel spreads connections
    among them evenly (one shared socket let one process take most of them)."""
    try:
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        raise UserError(f'cannot listen on {host}:{port}: {e.strerror or e}') from None
    return sock


def start_others(port, count, ready):
    """The other serving processes: this command again, on the same port; each writes a
    byte to the pipe `ready` once its model is loaded and it listens."""
    import subprocess
    import sys
    command = [sys.executable, '-m', 'graph_mnist.serve', *sys.argv[1:],
               f'--rest_api_port={port}', '--other_process', f'--ready_fd={ready}']
    return [subprocess.Popen(command, pass_fds=[ready]) for _ in range(count)]


def wait_for(others, ready, timeout=600):
    """Until every other process is ready (or has ended: it said why on stderr). A
    process still loading takes no connection: a client's keep-alive connections all
    went to the first one when it announced itself before the others were ready."""
    import select
    waiting, deadline = len(others), time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        if select.select([ready], [], [], 0.5)[0]:
            got = os.read(ready, waiting)
            if not got:  # every writer gone
                break
            waiting -= len(got)
        elif all(p.poll() is not None for p in others):
            break
    os.close(ready)
    if waiting:
        logging.warning('%d of the %d other serving processes did not start', waiting,
                        len(others))


def stop_others(others):
    for process in others:
        if process.poll() is None:
            process.terminate()
    for process in others:
        try:
            process.wait(20)
        except Exception:
            process.kill()
            process.wait()


def end_with(parent):
    """In a process the first one started: stop serving when the first one is gone."""
    import signal

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name='parent-watch', daemon=True).start()


def threads():
    """TensorFlow's threads per process. Its pools spin while they wait for work: with
    one pool per core in each of several processes, they took the cores from each other
    (2 processes on 2 cores: 6,126 single-image requests/s with 2 threads each, 6,669
    with 1, and p50 at concurrency 1 711 us against 489; BUILD_NOTES.md)."""
    processes = FLAGS.rest_api_num_processes or os.cpu_count() or 1
    intra = FLAGS.tensorflow_intra_op_parallelism or max(1, (os.cpu_count() or 1) // processes)
    return intra, FLAGS.tensorflow_inter_op_parallelism or intra


def main(argv):
    del argv
    import uvicorn
    base = FLAGS.model_base_path
    if not FLAGS.other_process:
        if not os.path.isdir(base):
            raise UserError(f'{base} is not a directory: give the base path graph_mnist.export '
                            f'wrote (it holds numbered versions)')
        if os.path.isfile(os.path.join(base, export.SAVED_MODEL)):
            raise UserError(f'{base} is one SavedModel, not a base path of numbered versions; '
                            f'move it to {os.path.join(base, "1")} or export again')
        sock = listen(FLAGS.host, FLAGS.rest_api_port)
        count = FLAGS.rest_api_num_processes or os.cpu_count() or 1
        ready, told = os.pipe()
        others = start_others(sock.getsockname()[1], count - 1, told)
        os.close(told)
    else:  # one of the others: quiet, on the first one's port, ending with it
        logging.set_verbosity(logging.WARNING)
        sock, others, count = None, [], None
        end_with(os.getppid())
    try:
        manager = Manager(FLAGS.model_name, base, FLAGS.file_system_poll_wait_seconds,
                          (FLAGS.max_batch_size, FLAGS.batch_timeout_micros / 1e6,
                           threads()))
        manager.start()
        gc.freeze()  # see Manager.poll
        # A request's JSON is about 900 new lists: at the default threshold (700) every
        # request set off a collection. At 50,000, one per ~55 requests: single-image
        # requests at concurrency 32 went from 6,150-6,650/s to 7,900-8,150/s here.
        gc.set_threshold(50_000, 20, 20)
        if FLAGS.other_process:  # listen only now, loaded, so no connection waits on us
            sock = listen(FLAGS.host, FLAGS.rest_api_port)
            os.write(FLAGS.ready_fd, b'1')
            os.close(FLAGS.ready_fd)
        else:
            wait_for(others, ready)
        if manager.current is None:
            logging.warning('no version under %s yet: waiting for one (requests get 404)',
                            base)
        host, port = sock.getsockname()[:2]
        shown = f'[{host}]' if ':' in host else host
        logging.info('listening on http://%s:%d/ (the drawing page; REST API at '
                     '/v1/models/%s), %d processes', shown, port, FLAGS.model_name, count or 0)
        config = uvicorn.Config(make_app(manager, FLAGS.max_body_bytes), log_level='warning',
                                access_log=False, limit_concurrency=1000, timeout_keep_alive=5)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            manager.stop()
    finally:
        stop_others(others)
        if sock is not None:
            sock.close()
    logging.info('stopped')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
