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

Batching: requests waiting for one signature are run together in one Session call (up
to --max_batch_size images). The batcher waits up to --batch_timeout_micros for more
only while other requests are still being read, so a lone request never waits.

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
import concurrent.futures
import json
import os
import queue
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
    """One thread that runs the requests given to one signature, several at a time.

    run(inputs) -> outputs, both {name: array with the examples along axis 0}. A request
    is (inputs, n); the thread takes the first one waiting, then every one already
    waiting, and then, while `reading()` says more requests are being read, waits up to
    `timeout` seconds for them, up to `max_batch_size` examples. Refused input fails the
    batch: it is then run request by request so that only the bad one fails."""

    def __init__(self, run, max_batch_size, timeout, reading, name):
        self.run, self.max_batch_size, self.timeout = run, max_batch_size, timeout
        self.reading = reading
        self.queue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self.loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, inputs, n):
        future = concurrent.futures.Future()
        with self.lock:
            if self.stopped:
                raise Unloaded()
            self.queue.put((inputs, n, future))
        return future

    def stop(self):
        """Runs what was submitted, then ends the thread."""
        with self.lock:
            self.stopped = True
            self.queue.put(None)
        self.thread.join()

    def gather(self, first):
        batch, size = [first], first[1]
        deadline = time.monotonic() + self.timeout
        while size < self.max_batch_size:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or not self.reading():
                    break
                try:
                    item = self.queue.get(timeout=min(left, 0.0002))
                except queue.Empty:
                    continue
            if item is None:  # stop: run this batch, then end
                self.queue.put(None)
                break
            batch.append(item)
            size += item[1]
        return batch

    def loop(self):
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = self.gather(first)
            try:
                self.answer(batch)
            except Exception as e:  # never lose the thread: fail these requests instead
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)

    def answer(self, batch):
        batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
        if not batch:
            return
        if len(batch) == 1:
            inputs, _, future = batch[0]
            self.settle(future, lambda: self.run(inputs))
            return
        names = batch[0][0].keys()
        joined = {name: np.concatenate([inputs[name] for inputs, _, _ in batch])
                  for name in names}
        try:
            outputs = self.run(joined)
        except ServingError:  # one request refused: find it, answer the others
            for inputs, _, future in batch:
                self.settle(future, lambda inputs=inputs: self.run(inputs))
            return
        start = 0
        for _, n, future in batch:
            future.set_result({name: value[start:start + n] for name, value in outputs.items()})
            start += n

    @staticmethod
    def settle(future, compute):
        try:
            future.set_result(compute())
        except Exception as e:
            future.set_exception(e)


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

    def __init__(self, version, path, batching):
        import tensorflow as tf
        self.version, self.path = version, path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ['serve'], path)
        self.graph.finalize()
        self.signatures = {name: Signature(self.session, self.graph, name, definition)
                           for name, definition in meta.signature_def.items()}
        max_batch_size, timeout, reading = batching
        self.batchers = {name: Batcher(signature, max_batch_size, timeout, reading,
                                       f'batcher-{version}-{name}')
                         for name, signature in self.signatures.items()}

    def submit(self, signature, inputs, n):
        return self.batchers[signature].submit(inputs, n)

    def unload(self):
        for batcher in self.batchers.values():
            batcher.stop()
        self.session.close()


class Manager:
    """The versions under a model base path: loads the newest, polls for newer ones."""

    def __init__(self, name, base_path, poll_seconds, batching):
        self.name, self.base_path, self.poll_seconds = name, base_path, poll_seconds
        self.batching = batching
        self.lock = threading.Lock()
        self.current = None      # the Servable answering requests
        self.states = {}         # version: (state, error message), as TF Serving reports
        self.failed = set()      # versions that could not be loaded (not retried)
        self.stopping = threading.Event()
        self.poller = None
        self.reading = 0  # requests being read (only the event loop's thread changes it)

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
            servable = Servable(newest, on_disk[newest], self.batching)
        except Exception as e:
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            logging.error('version %d of %s cannot be loaded: %s', newest, self.name, message)
            self.failed.add(newest)
            self.states[newest] = ('END', message)
            return
        with self.lock:
            old, self.current = self.current, servable
            self.states[newest] = ('AVAILABLE', '')
        logging.info('serving %s version %d (%s)', self.name, newest, on_disk[newest])
        if old is not None:
            self.states[old.version] = ('UNLOADING', '')
            old.unload()
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
            self.current.unload()


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
            array = np.asarray(values, dtype=dtype.as_numpy_dtype)
        except (ValueError, TypeError, OverflowError):
            raise bad_request(f"'{name}' expects {dtype.name} numbers, every example of "
                              f"shape {format_shape(example)}") from None
    if example is not None and (array.ndim != len(dims) or any(
            want is not None and want != got for want, got in zip(example, array.shape[1:]))):
        raise bad_request(f"'{name}' expects examples of shape {format_shape(example)}, got "
                          f"{format_shape(array.shape[1:])}")
    return array


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


def no_nan(constant):
    raise ValueError(f'{constant} is not a number JSON allows')


def make_app(manager, max_body_bytes):
    """The Starlette application: TensorFlow Serving's REST API and the drawing page."""
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
        manager.reading += 1
        try:
            raw = await read_body(request)
            try:
                body = json.loads(raw, parse_constant=no_nan)
            except (ValueError, UnicodeDecodeError) as e:
                raise bad_request(f'JSON Parse error: {e}') from None
            signature_name = (body.get('signature_name') or 'serving_default'
                              if isinstance(body, dict) else 'serving_default')
            for attempt in range(3):  # a version unloaded meanwhile: ask the newest
                servable = manager.get(name, version)
                signature = servable.signatures.get(signature_name)
                if signature is None:
                    raise bad_request(f'Serving signature name: "{signature_name}" not '
                                      f'found in signature def')
                inputs, n, row = parse_predict(body, signature)
                try:
                    future = servable.submit(signature_name, inputs, n)
                    break
                except Unloaded:
                    continue
            else:
                raise ServingError(503, 'the model is being reloaded; try again')
        finally:
            manager.reading -= 1
        outputs = await asyncio.wrap_future(future)
        return format_predict(outputs, row)

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
            return Response(json.dumps(answer, separators=(',', ':')),
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

    return Starlette(routes=[Route('/', home), Route('/v1/models/{rest:path}', api,
                                                     methods=['GET', 'POST'])],
                     exception_handlers={404: not_found, 405: not_found})


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
    flags.DEFINE_integer('batch_timeout_micros', 2000, 'Longest wait for more requests to '
                         'batch, while some are still being read.', lower_bound=0)
    flags.DEFINE_integer('max_body_bytes', 16 * 1024 * 1024, 'Larger request bodies get 413.',
                         lower_bound=1024)
    flags.mark_flag_as_required('model_base_path')


def listen(host, port):
    """A bound, listening socket, or one clear error."""
    try:
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        raise UserError(f'cannot listen on {host}:{port}: {e.strerror or e}') from None
    return sock


def main(argv):
    del argv
    import uvicorn
    base = FLAGS.model_base_path
    if not os.path.isdir(base):
        raise UserError(f'{base} is not a directory: give the base path graph_mnist.export '
                        f'wrote (it holds numbered versions)')
    if os.path.isfile(os.path.join(base, export.SAVED_MODEL)):
        raise UserError(f'{base} is one SavedModel, not a base path of numbered versions; '
                        f'move it to {os.path.join(base, "1")} or export again')
    sock = listen(FLAGS.host, FLAGS.rest_api_port)
    manager = Manager(FLAGS.model_name, base, FLAGS.file_system_poll_wait_seconds,
                      (FLAGS.max_batch_size, FLAGS.batch_timeout_micros / 1e6,
                       lambda: manager.reading > 0))
    manager.start()
    if manager.current is None:
        logging.warning('no version under %s yet: waiting for one (requests get 404)', base)
    host, port = sock.getsockname()[:2]
    shown = f'[{host}]' if ':' in host else host
    logging.info('listening on http://%s:%d/ (the drawing page; REST API at '
                 '/v1/models/%s)', shown, port, FLAGS.model_name)
    config = uvicorn.Config(make_app(manager, FLAGS.max_body_bytes), log_level='warning',
                            access_log=False, limit_concurrency=1000, timeout_keep_alive=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        manager.stop()
        sock.close()
        logging.info('stopped')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
