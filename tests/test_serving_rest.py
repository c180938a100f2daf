"""The REST handler's conformance with TensorFlow Serving where it needs no model: the
ASGI application driven directly, over a versions double (fast). CORS and its preflight,
the timeout's 504, a full queue's and an overload's 503 in JSON, gzip bodies, NaN
written as NaN; TF Serving's configuration files read, and refused in one line."""

import asyncio
import gzip
import json
import re
import time

import numpy as np
import pytest

from graph_mnist.errors import UserError
from graph_mnist.serving import batching
from graph_mnist.serving import config
from graph_mnist.serving import errors
from graph_mnist.serving import rest
from graph_mnist.serving.core import Core
from graph_mnist.serving.rest import Http


class Signature:
    def __init__(self):
        import tensorflow as tf
        self.inputs = {'x': (tf.float32, [None, 2])}


class Versions:
    """A versions.Versions double: answers {'y': 2x}, after `delay` seconds; `nan` puts
    a NaN in the answer."""

    def __init__(self, delay=0.0, nan=False):
        self.delay, self.nan, self.seen = delay, nan, []

    async def predict(self, name, version, label, signature_name, read, missing):
        inputs, n, extra = read(Signature())
        self.seen.append(inputs['x'])
        await asyncio.sleep(self.delay)
        y = inputs['x'] * 2
        if self.nan:
            y[0, 0], y[0, 1] = np.nan, np.inf
        return None, {'y': y.astype(np.float32)}, extra


def make_app(versions, http, timeout_seconds=30.0):
    """The REST transport over the request processor over `versions`."""
    return rest.make_app(Core(versions, rest_timeout_seconds=timeout_seconds), http, 'm')


def call(app, method, path, body=b'', headers=()):
    """(status, headers, body) of one request given to the ASGI application."""
    async def once():
        return await ask(app, method, path, body, headers)
    return asyncio.run(once())


async def ask(app, method, path, body=b'', headers=()):
    scope = {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1',
             'method': method, 'scheme': 'http', 'path': path, 'raw_path': path.encode(),
             'query_string': b'', 'root_path': '', 'server': ('127.0.0.1', 8501),
             'client': ('127.0.0.1', 5000),
             'headers': [(k.lower().encode(), v.encode()) for k, v in headers]}
    messages = [{'type': 'http.request', 'body': body, 'more_body': False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    head = dict((k.decode(), v.decode()) for k, v in sent[0]['headers'])
    return sent[0]['status'], head, b''.join(m.get('body', b'') for m in sent[1:])


PREDICT = '/v1/models/m:predict'
BODY = json.dumps({'instances': [[1.0, 2.0]]}).encode()


def test_cors_headers_and_the_preflight_as_tf_serving_gives_them():
    app = make_app(Versions(), Http(cors=True))
    status, head, body = call(app, 'POST', PREDICT, BODY)
    assert status == 200 and json.loads(body) == {'predictions': [[2.0, 4.0]]}
    assert head['access-control-allow-origin'] == '*'
    assert head['access-control-allow-methods'] == 'POST, GET'
    assert head['access-control-allow-headers'] == 'Content-Type'
    status, head, body = call(app, 'OPTIONS', PREDICT, headers=[('Origin', 'http://a.b')])
    assert status == 200 and body == b'' and head['access-control-allow-origin'] == '*'
    status, _, body = call(app, 'OPTIONS', PREDICT)
    assert status == 400
    assert json.loads(body) == {'error': 'Origin header is missing in CORS preflight'}
    # without the flag: no CORS headers, the preflight still answered as TF does
    plain = make_app(Versions(), Http())
    status, head, _ = call(plain, 'POST', PREDICT, BODY)
    assert status == 200 and 'access-control-allow-origin' not in head


def test_a_predict_past_the_timeout_gets_504_in_json():
    app = make_app(Versions(delay=2), Http(), timeout_seconds=0.05)
    status, head, body = call(app, 'POST', PREDICT, BODY)
    assert status == 504 and head['content-type'] == 'application/json'
    assert 'Deadline Exceeded' in json.loads(body)['error']


def test_requests_beyond_the_most_at_once_get_503_in_json():
    app = make_app(Versions(delay=0.5), Http(max_in_flight=2))

    async def crowd():
        return await asyncio.gather(*[ask(app, 'POST', PREDICT, BODY) for _ in range(3)])
    statuses = sorted(status for status, _, _ in asyncio.run(crowd()))
    assert statuses == [200, 200, 503]
    status, head, body = asyncio.run(crowd())[-1]
    assert head['content-type'] == 'application/json' and 'overloaded' in json.loads(body)['error']


def test_gzip_bodies_are_read_and_a_gzip_bomb_is_refused():
    app = make_app(Versions(), Http(max_body_bytes=4096))
    status, _, body = call(app, 'POST', PREDICT, gzip.compress(BODY),
                           [('Content-Encoding', 'gzip')])
    assert status == 200 and json.loads(body) == {'predictions': [[2.0, 4.0]]}
    bomb = gzip.compress(b' ' * 1_000_000)  # 1 kB that inflates to 1 MB
    assert len(bomb) < 4096
    status, _, body = call(app, 'POST', PREDICT, bomb, [('Content-Encoding', 'gzip')])
    assert status == 413 and 'inflates to more than the 4,096' in json.loads(body)['error']
    status, _, body = call(app, 'POST', PREDICT, b'not gzip', [('Content-Encoding', 'gzip')])
    assert status == 400 and 'gzip body cannot be read' in json.loads(body)['error']
    status, _, body = call(app, 'POST', PREDICT, BODY, [('Content-Encoding', 'br')])
    assert status == 400 and 'br is not supported' in json.loads(body)['error']


def test_nan_and_infinity_in_an_answer_are_written_as_tf_serving_writes_them():
    status, _, body = call(make_app(Versions(nan=True), Http()), 'POST', PREDICT, BODY)
    assert status == 200 and body == b'{"predictions":[[NaN,Infinity]]}'
    assert np.isnan(json.loads(body)['predictions'][0][0])


def test_a_full_queue_refuses_at_once_with_503_and_the_waiting_are_answered():
    async def scenario():
        import threading
        gate = threading.Event()

        def run(inputs):
            gate.wait(10)
            return {'y': inputs['x']}
        batcher = batching.Batcher(run, max_batch_size=2, timeout=0, name='t',
                                   max_enqueued_batches=1)
        running = asyncio.ensure_future(batcher({'x': np.zeros((1, 2))}, 1))
        await asyncio.sleep(0.1)  # taken: the queue is empty again
        waiting = [asyncio.ensure_future(batcher({'x': np.ones((1, 2))}, 1)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(errors.ServingError) as full:
            await batcher({'x': np.ones((1, 2))}, 1)
        assert full.value.status == 503 and 'queue' in full.value.message
        gate.set()
        await running
        assert [(await w)['y'].shape for w in waiting] == [(1, 2), (1, 2)]
        await batcher.stop()
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_num_batch_threads_runs_that_many_batches_at_once():
    """Two threads: while one batch runs, the next one starts; one thread: it waits."""
    import threading

    def at_once(threads):
        running, most, lock = [0], [0], threading.Lock()

        def run(inputs):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.2)
            with lock:
                running[0] -= 1
            return {'y': inputs['x']}

        async def scenario():
            batcher = batching.Batcher(run, max_batch_size=1, timeout=0, name='t',
                                       threads=threads)
            answers = await asyncio.gather(*[batcher({'x': np.ones((1, 2)) * i}, 1)
                                             for i in range(4)])
            await batcher.stop()
            return [float(a['y'][0, 0]) for a in answers]
        assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [0.0, 1.0, 2.0, 3.0]
        return most[0]
    assert at_once(1) == 1 and at_once(2) == 2


def test_requests_of_unequal_shapes_batched_together_are_each_answered():
    calls = []

    def run(inputs):
        calls.append(inputs['x'].shape)
        return {'y': inputs['x'].sum(axis=tuple(range(1, inputs['x'].ndim)))}

    async def scenario():
        import threading
        gate = threading.Event()
        first = batching.Batcher(lambda inputs: (gate.wait(10), run(inputs))[1], 8, 0, 't')
        held = asyncio.ensure_future(first({'x': np.ones((1, 2))}, 1))
        await asyncio.sleep(0.1)
        odd = [asyncio.ensure_future(first({'x': np.ones((1, k))}, 1)) for k in (2, 3, 2)]
        await asyncio.sleep(0)
        gate.set()
        await held
        return [float((await o)['y'][0]) for o in odd]
    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [2.0, 3.0, 2.0]  # never hangs
    assert calls[1:] == [(1, 2), (1, 3), (1, 2)]  # not joined: each alone


@pytest.mark.parametrize('text, expected', [
    ('max_batch_size { value: 128 }\nbatch_timeout_micros { value: 500 }\n'
     'max_enqueued_batches { value: 7 }\nnum_batch_threads { value: 4 }\n',
     {'max_batch_size': 128, 'batch_timeout_micros': 500, 'max_enqueued_batches': 7,
      'num_batch_threads': 4}),
    ('# TF Serving\'s README example, in part\nmax_batch_size { value: 32 }\n',
     {'max_batch_size': 32}),
    # what protobuf's text format allows: hex, <...> for {...}, a name in parts
    ('max_batch_size < value: 0x40 >\nthread_pool_name { value: "batch_" "threads" }',
     {'max_batch_size': 64, 'thread_pool_name': 'batch_threads'}),
])
def test_batching_parameters_files_are_read(tmp_path, text, expected):
    path = tmp_path / 'batching.txt'
    path.write_text(text)
    assert config.batching_parameters(str(path)) == expected


@pytest.mark.parametrize('text, message', [
    ('max_batch_size: 128', ':1:17: Expected "{"'),
    ('enable_large_batch_splitting { value: true }', 'enable_large_batch_splitting is '
     'TensorFlow Serving\'s, not honoured'),
    ('allowed_batch_sizes: [8, 16]', 'allowed_batch_sizes is TensorFlow Serving\'s, not '
                                     'honoured here'),
    ('max_batch_size { value: 0 }', 'max_batch_size must be at least 1, got 0'),
    ('max_batch_size { value: "a" }', ':1:25: Couldn\'t parse integer'),
    ('\n\nmax_batch_size { value: 1 ', ':3:25: Expected "}"'),
    ('max_batch_sizes { value: 1 }', ':1:1: Message type "tensorflow.serving.'
                                     'BatchingParameters" has no field named '
                                     '"max_batch_sizes"'),
])
def test_batching_parameters_files_with_faults_are_refused_in_one_line(tmp_path, text,
                                                                        message):
    path = tmp_path / 'batching.txt'
    path.write_text(text)
    with pytest.raises(UserError) as raised:
        config.batching_parameters(str(path))
    assert message in str(raised.value) and '\n' not in str(raised.value)
    assert str(raised.value).startswith(f'--batching_parameters_file={path}')


def test_model_config_and_monitoring_files_as_tf_serving_documents_them(tmp_path):
    models = tmp_path / 'models.config'
    models.write_text("model_config_list {\n  config {\n    name: 'digits'\n"
                      "    base_path: '/models/digits/'\n    model_platform: 'tensorflow'\n"
                      "  }\n}\n")
    assert config.model_config(str(models)) == [config.Model('digits', '/models/digits/')]
    models.write_text("model_config_list { config { name: 'chiffres' "
                      "base_path: '/modèles/chiffres' } }", encoding='utf-8')
    assert config.model_config(str(models))[0].base_path == '/modèles/chiffres'
    # several models, each its policy and labels (TF Serving's documented example)
    models.write_text("""model_config_list {
      config { name: 'a' base_path: '/a'
               model_version_policy { specific { versions: [1, 2] } }
               version_labels { key: 'stable' value: 1 }
               version_labels { key: 'canary' value: 2 } }
      config { name: 'b' base_path: '/b' model_version_policy { all {} } }
      config { name: 'c' base_path: '/c' model_version_policy { latest { num_versions: 2 } } }
    }""")
    a, b, c = config.model_config(str(models))
    assert (a.policy, a.versions, a.labels) == ('specific', (1, 2),
                                                (('canary', 2), ('stable', 1)))
    assert (b.policy, c.policy, c.versions) == ('all', 'latest', (2,))
    assert a.aspired([1, 2, 3]) == [1, 2] and b.aspired([3, 1]) == [1, 3]
    assert c.aspired([1, 2, 3]) == [2, 3] and c.aspired([]) == []
    assert config.Model('d', '/d').aspired([1, 5, 2]) == [5]  # TF Serving's default, latest 1
    # refused in one line: a bad number where it stands, a model twice, fields not honoured
    for text, refused in [
            ("config { name: 'a' base_path: '/a' model_version_policy { latest { "
             "num_versions: 1-2 } } }", ":1:102: Couldn't parse integer: 1-2"),
            ("config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' }",
             "model 'a' is configured twice"),
            ("config { name: 'a' base_path: '/a' logging_config { } }",
             "logging_config is TensorFlow Serving's, not honoured"),
            ("config { name: 'a' base_path: '/a' model_version_policy { specific {} } }",
             'needs versions of 1 and more'),
            ("config { name: 'a' base_path: '/a' version_labels { key: '1x' value: 1 } }",
             'not starting with a digit'),
            ("config { name: 'a' }", 'every model needs a name and a base_path')]:
        models.write_text('model_config_list { ' + text + ' }')
        if '1-2' in text:  # the column is where 1-2 starts
            assert models.read_text().index('1-2') + 1 == 102
        with pytest.raises(UserError, match=re.escape(refused)) as raised:
            config.model_config(str(models))
        assert '\n' not in str(raised.value)
    monitoring = tmp_path / 'monitoring.config'
    monitoring.write_text('prometheus_config {\n  enable: true,\n  path: "/metrics"\n}\n')
    assert config.monitoring(str(monitoring)) == '/metrics'
    monitoring.write_text('prometheus_config { enable: false }')
    assert config.monitoring(str(monitoring)) is None
    with pytest.raises(UserError, match='No such file'):
        config.monitoring(str(tmp_path / 'none'))
