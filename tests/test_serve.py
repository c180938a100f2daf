"""graph_mnist.serve: TensorFlow Serving's REST API over our exported network.

One server process on a free loopback port serves the module; every test stops what it
starts. The examples follow TensorFlow Serving's REST API documentation (api_rest.md):
status, metadata, predict in the row and columnar formats, binary values as b64."""

import asyncio
import base64
import concurrent.futures
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time

from conftest import run_module
from conftest import run_script
import numpy as np
from PIL import Image
import pytest
import server_process

from graph_mnist import predict
from graph_mnist.serving import batching
from graph_mnist.serving import errors

DIGITS = os.path.join(os.path.dirname(__file__), 'fixtures', 'digits')
MAX_BODY = 2 * 1024 * 1024


def request(url, method, path, body=None, timeout=30):
    """(status, parsed JSON answer, Content-Type) over one fresh connection."""
    host, port = url[len('http://'):].split(':')
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, body=data,
                           headers={'Content-Type': 'application/json'} if data else {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw), response.getheader('Content-Type')
    finally:
        connection.close()


def b64(path):
    with open(path, 'rb') as f:
        return {'b64': base64.b64encode(f.read()).decode()}


@pytest.fixture(scope='module')
def server(exported):
    _, base, _, _ = exported
    with server_process.Subprocess(base, f'--max_body_bytes={MAX_BODY}') as running:
        yield running
    assert 'Traceback' not in running.log(), running.log()[-6000:]


@pytest.fixture(scope='module')
def reference(exported):
    """What the same SavedModel answers in process, through plain TensorFlow."""
    return predict.Predictor(exported[1])


# ------------------------------------------------------------------ the documented API

def test_status_as_tensorflow_serving_reports_it(server):
    status, answer, content_type = request(server.url, 'GET', '/v1/models/mnist')
    assert status == 200 and content_type == 'application/json'
    assert answer == {'model_version_status': [
        {'version': '1', 'state': 'AVAILABLE',
         'status': {'error_code': 'OK', 'error_message': ''}}]}
    assert request(server.url, 'GET', '/v1/models/mnist/versions/1')[1] == answer


def test_metadata_lists_both_signatures_nested_as_tensorflow_serving_does(server):
    status, answer, _ = request(server.url, 'GET', '/v1/models/mnist/metadata')
    assert status == 200
    assert answer['model_spec'] == {'name': 'mnist', 'signature_name': '', 'version': '1'}
    signatures = answer['metadata']['signature_def']['signature_def']
    assert set(signatures) == {'serving_default', 'from_image'}
    images = signatures['serving_default']['inputs']['images']
    assert images['dtype'] == 'DT_FLOAT'
    assert [d['size'] for d in images['tensor_shape']['dim']] == ['-1', '28', '28', '1']
    assert signatures['from_image']['inputs']['image_bytes']['dtype'] == 'DT_STRING'
    assert set(signatures['from_image']['outputs']) == {'probabilities', 'digit', 'mnist'}
    assert signatures['serving_default']['method_name'] == 'tensorflow/serving/predict'
    assert request(server.url, 'GET', '/v1/models/mnist/versions/1/metadata')[1] == answer


def test_predict_row_and_columnar_formats_answer_what_tensorflow_answers(
        server, exported, reference):
    images = exported[2][:5]
    expected_p, expected_digits = reference(images)
    status, row, _ = request(server.url, 'POST', '/v1/models/mnist:predict',
                             {'signature_name': 'serving_default',
                              'instances': images.tolist()})
    assert status == 200 and len(row['predictions']) == 5
    for answer, p, digit in zip(row['predictions'], expected_p, expected_digits):
        assert set(answer) == {'probabilities', 'digit'} and answer['digit'] == digit
        np.testing.assert_allclose(answer['probabilities'], p, atol=1e-6)
    status, columnar, _ = request(server.url, 'POST', '/v1/models/mnist/versions/1:predict',
                                  {'inputs': {'images': images.tolist()}})
    assert status == 200 and columnar['outputs']['digit'] == expected_digits.tolist()
    np.testing.assert_allclose(columnar['outputs']['probabilities'], expected_p, atol=1e-6)
    # the row format's named-input form, as for a signature of several inputs
    status, named, _ = request(server.url, 'POST', '/v1/models/mnist:predict',
                               {'instances': [{'images': x} for x in images.tolist()]})
    assert status == 200 and named == row


def test_pictures_as_b64_are_read_by_the_graph(server, reference):
    names = ['3_pen.png', '7_font.png', '0_pen.png']
    status, answer, _ = request(server.url, 'POST', '/v1/models/mnist:predict', {
        'signature_name': 'from_image',
        'instances': [b64(os.path.join(DIGITS, name)) for name in names]})
    assert status == 200
    contents = [predict.read_file(os.path.join(DIGITS, name)) for name in names]
    p, digits, pictures = reference.from_files(contents)  # the same graph, in process
    for got, want_p, digit, picture in zip(answer['predictions'], p, digits, pictures):
        assert got['digit'] == digit
        np.testing.assert_allclose(got['probabilities'], want_p, atol=1e-6)
        np.testing.assert_allclose(got['mnist'], picture, atol=1e-6)
    assert [a['digit'] for a in answer['predictions']] == [3, 7, 0]


def test_base64_with_line_breaks_and_without_padding_is_read_as_tf_serving_reads_it(server):
    clean = b64(os.path.join(DIGITS, '7_font.png'))['b64']
    wrapped = '\n'.join(clean[i:i + 76] for i in range(0, len(clean), 76))  # MIME's lines
    unpadded = clean.rstrip('=')
    assert clean.endswith('==') and '\n' in wrapped  # both cases really tried
    answers = []
    for text in (clean, wrapped, unpadded):
        status, answer, _ = request(server.url, 'POST', '/v1/models/mnist:predict', {
            'signature_name': 'from_image', 'instances': [{'b64': text}]})
        assert status == 200, answer
        answers.append(answer['predictions'][0]['probabilities'])
    assert answers[0] == answers[1] == answers[2]


def test_float32_outputs_are_written_in_their_shortest_form():
    import orjson

    from graph_mnist.serving import json_tensor
    values = np.array([[0.1, 1 / 3, 1e-8, 0.9999999]], np.float32)
    written = json_tensor.to_json_bytes(json_tensor.format_predict({'p': values}, row=True))
    assert written == orjson.dumps({'predictions': [[0.1, 0.33333334, 1e-08, 0.9999999]]})
    assert b'0.10000000149011612' not in written
    read = np.array(orjson.loads(written)['predictions'], np.float32)
    np.testing.assert_array_equal(read, values)  # the same float32 numbers, read back
    two = {'p': values, 'digit': np.array([7])}  # several outputs: one object a row
    assert orjson.loads(json_tensor.to_json_bytes(json_tensor.format_predict(two, row=True))) == \
        {'predictions': [{'p': [0.1, 0.33333334, 1e-08, 0.9999999], 'digit': 7}]}
    odd = np.array([[np.nan, np.inf, -np.inf, 0.1]], np.float32)  # as TF Serving writes them
    assert json_tensor.to_json_bytes(json_tensor.format_predict({'p': odd}, row=True)) == \
        b'{"predictions":[[NaN,Infinity,-Infinity,0.1]]}'


def test_columnar_inputs_with_other_keys_are_answered_as_tf_serving_does(server):
    status, answer, _ = request(server.url, 'POST', '/v1/models/mnist:predict',
                                {'inputs': {'images': ZEROS, 'comment': 'ignored'}})
    plain_status, plain, _ = request(server.url, 'POST', '/v1/models/mnist:predict',
                                     {'inputs': {'images': ZEROS}})
    assert (status, plain_status) == (200, 200) and answer == plain


# ------------------------------------------------------------------ bad input

def png_bytes(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, 'PNG')
    return out.getvalue()


def bomb():
    data = bytearray(png_bytes(np.zeros((8, 8), np.uint8)))
    data[16:24] = (50_000).to_bytes(4, 'big') * 2  # claims 50,000 x 50,000 pixels
    return {'b64': base64.b64encode(bytes(data)).decode()}


ZEROS = np.zeros((1, 28, 28, 1)).tolist()
BAD = [
    ('POST', '/v1/models/mnist:predict', b'{"instances": [', 400, 'JSON Parse error'),
    ('POST', '/v1/models/mnist:predict', b'[1, 2]', 400, 'must be a JSON object'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': 'serving_default'}, 400,
     "Missing 'inputs' or 'instances' key"),
    ('POST', '/v1/models/mnist:predict', {'instances': ZEROS, 'inputs': ZEROS}, 400,
     "expecting only one of 'inputs' or 'instances'"),
    ('POST', '/v1/models/mnist:predict', {'instances': []}, 400,
     "No values in 'instances' array"),
    ('POST', '/v1/models/mnist:predict', {'instances': np.zeros((1, 28, 28)).tolist()}, 400,
     'expects examples of shape [28, 28, 1], got [28, 28]'),
    ('POST', '/v1/models/mnist:predict', {'instances': [[[['a']] * 28] * 28]}, 400,
     'expects float32 numbers'),
    ('POST', '/v1/models/mnist:predict', {'instances': [ZEROS[0], [[0.5]]]}, 400,
     'expects float32 numbers'),  # ragged
    ('POST', '/v1/models/mnist:predict',  # NaN is read, as TF Serving reads it; the graph refuses
     b'{"instances": [' + json.dumps(np.full((1, 28, 28, 1), np.nan).tolist()).encode()[1:-1]
     + b']}', 400, 'images must be numbers in [0, 1] (a white digit on black), not NaN'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': ['serving_default'],
                                          'instances': ZEROS}, 400,
     '"signature_name" must be a string, got list'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': {'a': 1}, 'instances': ZEROS},
     400, '"signature_name" must be a string, got dict'),
    ('POST', '/v1/models/mnist:predict', {'instances': (np.ones((1, 28, 28, 1)) * 3).tolist()},
     400, 'images must be numbers in [0, 1]'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': 'from_image',
                                          'instances': [{'b64': 'bm90IGFuIGltYWdl'}]},
     400, 'not a PNG or JPEG image'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': 'from_image',
                                          'instances': [{'b64': '%%%'}]},
     400, 'holds no valid base64'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': 'from_image',
                                          'instances': [bomb()]},
     400, 'more than 25,000,000 pixels'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': 'from_image', 'instances': [
        {'b64': base64.b64encode(png_bytes(np.full((40, 40), 200, np.uint8))).decode()}]},
     400, 'no digit found: the picture is blank'),
    ('POST', '/v1/models/mnist:predict', {'signature_name': 'serving', 'instances': ZEROS},
     400, 'Serving signature name: "serving" not found in signature def'),
    ('POST', '/v1/models/digits:predict', {'instances': ZEROS}, 404,
     'Servable not found for request: Latest(digits)'),
    ('POST', '/v1/models/mnist/versions/9:predict', {'instances': ZEROS}, 404,
     'Servable not found for request: Specific(mnist, 9)'),
    ('GET', '/v1/models/mnist/versions/9', None, 404, 'Could not find version 9 of model mnist'),
    ('GET', '/v1/models/digits', None, 404, 'Could not find any versions of model digits'),
    ('GET', '/v1/models/mnist/labels/stable', None, 400,
     'Unrecognized servable version label: stable'),
    ('POST', '/v1/models/mnist/labels/stable:predict', {'instances': ZEROS}, 400,
     'Unrecognized servable version label: stable'),
    ('POST', '/v1/models/mnist:classify', {'examples': []}, 400, 'predict signatures only'),
    ('GET', '/v1/models/mnist:predict', None, 400, 'Malformed request: GET'),
    ('POST', '/v1/models/mnist/metadata', {}, 400, 'Malformed request: POST'),
    ('POST', '/v1/models/mnist:explain', {}, 400, 'Malformed request: POST'),
    ('PUT', '/v1/models/mnist', {}, 400, 'Malformed request: PUT'),
    ('DELETE', '/v1/models/mnist', None, 400, 'Malformed request: DELETE'),
    ('GET', '/v2/anything', None, 404, 'Malformed request'),
    ('POST', '/v1/models/mnist:predict', b'{"instances": [' + b'0,' * MAX_BODY + b'0]}', 413,
     'more than the 2,097,152'),
]


@pytest.mark.parametrize('method, path, body, code, message', BAD,
                         ids=[f'{i}-{case[3]}' for i, case in enumerate(BAD)])
def test_bad_input_gets_its_status_and_message_and_the_next_request_is_served(
        server, method, path, body, code, message):
    status, answer, content_type = request(server.url, method, path, body)
    assert (status, content_type) == (code, 'application/json')
    assert list(answer) == ['error'] and message in answer['error'], answer
    assert 'Traceback' not in answer['error']
    status, good, _ = request(server.url, 'POST', '/v1/models/mnist:predict',
                              {'instances': ZEROS})
    assert status == 200 and len(good['predictions']) == 1


def test_a_bad_request_batched_with_good_ones_fails_alone(server, exported, reference):
    images = exported[2][:24]
    expected = reference(images)[1]
    bad = (np.ones((1, 28, 28, 1)) * 7).tolist()

    def one(i):
        body = {'instances': bad if i % 6 == 5 else images[i:i + 1].tolist()}
        return request(server.url, 'POST', '/v1/models/mnist:predict', body)
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(24)))
    for i, (status, answer, _) in enumerate(answers):
        if i % 6 == 5:
            assert status == 400 and 'in [0, 1]' in answer['error']
        else:
            assert status == 200 and answer['predictions'][0]['digit'] == expected[i]


def test_a_client_that_disconnects_mid_request_costs_nothing(server):
    host, port = server.url[len('http://'):].split(':')
    body = json.dumps({'instances': ZEROS}).encode()
    for cut in (10, len(body) // 2):  # in the headers' promise, in the body
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b'POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\n'
                      b'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n'
                      % len(body) + body[:cut])
    with socket.create_connection((host, int(port)), timeout=10) as s:  # gone before answer
        s.sendall(b'POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: '
                  b'%d\r\n\r\n' % len(body) + body)
    assert request(server.url, 'POST', '/v1/models/mnist:predict',
                   {'instances': ZEROS})[0] == 200
    assert server.process.poll() is None


# ------------------------------------------------------------------ versions under load

def test_a_new_version_is_served_without_a_failed_request(exported, tmp_path):
    workdir, base, images, _ = exported
    mine = str(tmp_path / 'exported')
    shutil.copytree(os.path.join(base, '1'), os.path.join(mine, '1'))
    failures, answered, stop = [], [0], threading.Event()

    def client():
        body = {'instances': images[:2].tolist()}
        while not stop.is_set():
            status, answer, _ = request(running.url, 'POST', '/v1/models/mnist:predict', body)
            if status != 200:
                failures.append(answer)
            answered[0] += 1

    with server_process.Subprocess(mine, '--file_system_poll_wait_seconds=0.2') as running:
        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        try:
            time.sleep(1)
            before = answered[0]
            result = run_module('graph_mnist.export', f'--workdir={workdir}',
                                f'--export_dir={mine}')
            assert result.returncode == 0, result.stderr
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                versions = request(running.url, 'GET', '/v1/models/mnist')[1]
                states = {v['version']: v['state'] for v in versions['model_version_status']}
                if states == {'2': 'AVAILABLE', '1': 'END'}:
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            stop.set()
            for c in clients:
                c.join(60)
        assert states == {'2': 'AVAILABLE', '1': 'END'}
        assert request(running.url, 'GET', '/v1/models/mnist/metadata')[1][
            'model_spec']['version'] == '2'
        assert failures == [] and answered[0] > before + 10
        assert 'serving mnist version 2' in running.log()


# ------------------------------------------------------------------ the command

def test_the_savedmodel_shows_both_signatures_in_tensorflows_own_tool(exported):
    tool = shutil.which('saved_model_cli')
    assert tool, 'saved_model_cli comes with tensorflow'
    shown = subprocess.run([tool, 'show', '--all', '--dir', os.path.join(exported[1], '1')],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "signature_def['serving_default']" in shown.stdout
    assert "signature_def['from_image']" in shown.stdout
    assert 'image_bytes' in shown.stdout and 'dtype: DT_STRING' in shown.stdout


def test_clear_errors_for_a_bad_base_path_or_a_busy_port(exported, tmp_path):
    result = run_module('graph_mnist.serve', f'--model_base_path={tmp_path / "none"}')
    assert result.returncode == 1 and 'is not a directory' in result.stderr
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        result = run_module('graph_mnist.serve', f'--model_base_path={exported[1]}',
                            f'--rest_api_port={busy.getsockname()[1]}')
    assert result.returncode == 1 and 'cannot listen on 127.0.0.1:' in result.stderr
    assert 'Traceback' not in result.stderr


# ------------------------------------------------------------------ the batcher alone

def test_requests_arriving_while_a_batch_runs_go_next_together_and_a_refused_one_alone():
    calls = []
    release = threading.Event()

    def run(inputs):  # doubles x; refuses negative numbers, as the graph refuses NaN
        calls.append(len(inputs['x']))
        release.wait(10)
        if (inputs['x'] < 0).any():
            raise errors.bad_request('negative')
        return {'y': inputs['x'] * 2}

    async def scenario():
        batcher = batching.Batcher(run, max_batch_size=8, timeout=0, name='test')
        first = asyncio.ensure_future(batcher({'x': np.array([100.0])}, 1))
        await asyncio.sleep(0.2)  # the first runs alone, held by `release`
        pairs = [asyncio.ensure_future(batcher({'x': np.array([i, i + 0.5])}, 2))
                 for i in range(5)]
        bad = asyncio.ensure_future(batcher({'x': np.array([-1.0])}, 1))
        await asyncio.sleep(0.1)
        release.set()
        assert (await first) == {'y': [200.0]}
        for i, pair in enumerate(pairs):
            np.testing.assert_array_equal((await pair)['y'], [2 * i, 2 * i + 1])
        with pytest.raises(errors.ServingError, match='negative'):
            await bad
        await batcher.stop()
        with pytest.raises(errors.Unloaded):
            await batcher({'x': np.array([1.0])}, 1)
    asyncio.run(scenario())
    # 1 alone; then 4 requests (8 examples, the most); then the rest, which fails and is
    # run again request by request
    assert calls == [1, 8, 3, 2, 1]


def test_a_lone_request_does_not_wait_and_stop_answers_what_was_given():
    async def scenario():
        batcher = batching.Batcher(lambda inputs: (time.sleep(0.2), inputs)[1],
                                max_batch_size=64, timeout=0, name='test')
        start = time.monotonic()
        await batcher({'x': np.zeros(1)}, 1)
        assert time.monotonic() - start < 1
        given = [asyncio.ensure_future(batcher({'x': np.ones(1)}, 1)) for _ in range(3)]
        await asyncio.sleep(0)
        await batcher.stop()  # waits for the three
        assert all(g.done() and g.result()['x'][0] == 1 for g in given)
    asyncio.run(scenario())


# ------------------------------------------------------------------ the load benchmark

def test_bench_serving_reports_every_level_and_the_goals(exported, tmp_path):
    out = tmp_path / 'serving.json'
    result = run_script('bench_serving.py', f'--model_base_path={exported[1]}',
                        '--requests=40', '--batch_requests=4', '--concurrency=1,8',
                        '--batch_sizes=1,10', '--inprocess_batches=5',
                        '--from_image_requests=20', '--swap_requests=3000', f'--json={out}')
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    levels = {(x['api'], x['signature'], x['batch'], x['concurrency']): x
              for x in saved['levels']}
    assert set(levels) == {('REST', 'serving_default', 1, 1), ('REST', 'serving_default', 1, 8),
                           ('REST', 'serving_default', 10, 1), ('REST', 'serving_default', 10, 8),
                           ('gRPC', 'serving_default', 1, 1), ('gRPC', 'serving_default', 1, 8),
                           ('REST', 'from_image', 1, 8), ('gRPC', 'from_image', 1, 8)}
    for (api, signature, batch, _), x in levels.items():
        assert x['errors'] == 0
        assert x['requests'] == (20 if signature == 'from_image' else 40 if batch == 1 else 4)
        assert x['images_per_second'] == pytest.approx(x['requests_per_second'] * batch)
        assert 0 < x['p50_ms'] <= x['p99_ms'] <= x['max_ms']
        if api == 'gRPC':  # the server's own count agrees: every call answered OK
            assert x['server_ok'] == x['requests']
    assert saved['inprocess']['images_per_second'] == max(saved['inprocess']['each'])
    swap = saved['swap']
    assert swap['requests'] >= 3000 and swap['failures'] == 0
    assert set(swap['answers_by_version']) == {'1', '2'}  # the swap took place under load
    assert swap['older_after_newer_anywhere'] == swap['older_after_newer_in_a_client'] == 0
    assert os.listdir(exported[1]) == ['1']  # the swap ran on a copy
    assert saved['goals']['no errors'] is True
