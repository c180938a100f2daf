"""graph_mnist.serve started as TensorFlow Serving is started: its Docker image's
environment (MODEL_NAME, MODEL_BASE_PATH), its configuration files, its flags; the
Prometheus page adding up every process; a refused body's answer readable by a client
that sends all before reading; TF Serving's warm-up file written by export and replayed.
Servers on free loopback ports, stopped at the end."""

import json
import os
import shutil
import urllib.error
import urllib.request

from conftest import run_module
import grpc
import numpy as np
import server_process
from test_grpc import predict_request
from test_serve import request

from graph_mnist import export

ZEROS = {'instances': np.zeros((1, 28, 28, 1)).tolist()}


def test_started_as_tf_servings_docker_image_starts_it(exported, tmp_path):
    models = tmp_path / 'models'
    shutil.copytree(exported[1], models / 'digits')  # $MODEL_BASE_PATH/$MODEL_NAME
    with server_process.Subprocess(None, '--rest_api_num_processes=1',
                                   env={'MODEL_NAME': 'digits',
                                        'MODEL_BASE_PATH': str(models)}) as server:
        status, answer, _ = request(server.url, 'GET', '/v1/models/digits')
        assert status == 200 and answer['model_version_status'][0]['state'] == 'AVAILABLE'
        assert request(server.url, 'POST', '/v1/models/digits:predict', ZEROS)[0] == 200


def test_tf_servings_config_files_and_flags(exported, tmp_path):
    (tmp_path / 'models.config').write_text(
        "model_config_list {\n  config {\n    name: 'digits'\n"
        f"    base_path: '{exported[1]}'\n    model_platform: 'tensorflow'\n  }}\n}}\n")
    (tmp_path / 'batching.config').write_text(
        'max_batch_size { value: 16 }\nbatch_timeout_micros { value: 0 }\n'
        'max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n')
    (tmp_path / 'monitoring.config').write_text(
        'prometheus_config {\n  enable: true,\n  path: "/metrics"\n}\n')
    with server_process.Subprocess(
            None, f'--model_config_file={tmp_path / "models.config"}', '--enable_batching',
            f'--batching_parameters_file={tmp_path / "batching.config"}',
            f'--monitoring_config_file={tmp_path / "monitoring.config"}',
            '--rest_api_timeout_in_ms=10000', '--rest_api_enable_cors_support',
            '--rest_api_num_threads=8', '--file_system_poll_wait_seconds=0',
            '--rest_api_num_processes=2') as server:
        assert request(server.url, 'POST', '/v1/models/digits:predict', ZEROS)[0] == 200
        with urllib.request.urlopen(server.url + '/metrics', timeout=30) as answer:
            assert ':tensorflow:serving:request_count' in answer.read().decode()
        status, _, _ = request(server.url, 'GET', '/monitoring/prometheus/metrics')
        assert status == 404  # moved to the configured path
        preflight = urllib.request.Request(server.url + '/v1/models/digits:predict',
                                           method='OPTIONS',
                                           headers={'Origin': 'http://localhost:3000'})
        with urllib.request.urlopen(preflight, timeout=30) as answer:
            assert answer.status == 200
            assert answer.headers['Access-Control-Allow-Origin'] == '*'


def test_flags_that_conflict_are_refused_in_one_line(exported, tmp_path):
    (tmp_path / 'batching.config').write_text('max_batch_size { value: 16 }\n')
    for flags, message in [
            (['--max_batch_size=8', f'--batching_parameters_file={tmp_path / "batching.config"}'],
             'max_batch_size is set both by --max_batch_size and by --batching_parameters_file'),
            (['--port=0', '--rest_api_port=0'], 'nothing to serve'),
            ([f'--batching_parameters_file={tmp_path / "none"}'], 'No such file')]:
        result = run_module('graph_mnist.serve', f'--model_base_path={exported[1]}', *flags)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
    result = run_module('graph_mnist.serve', env={'MODEL_BASE_PATH': ''})
    assert result.returncode == 1 and 'give --model_base_path' in result.stderr


def metric(page, name, **labels):
    wanted = ','.join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f'{name}{{{wanted}}} ' if labels else f'{name} '
    for line in page.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(' ', 1)[1])
    return 0.0


def test_metrics_add_up_every_process_under_tf_servings_names(exported):
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    with server_process.Subprocess(exported[1], '--rest_api_num_processes=2') as server:
        for _ in range(10):  # fresh connections: both processes answer
            assert request(server.url, 'POST', '/v1/models/mnist:predict', ZEROS)[0] == 200
        assert request(server.url, 'POST', '/v1/models/nope:predict', ZEROS)[0] == 404
        zeros = predict_request(images=np.zeros((1, 28, 28, 1), np.float32))
        for _ in range(4):
            with grpc.insecure_channel(server.grpc_target) as channel:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(zeros,
                                                                                   timeout=30)
        pages = set()
        for _ in range(4):
            with urllib.request.urlopen(server.url + '/monitoring/prometheus/metrics',
                                        timeout=30) as answer:
                assert answer.headers['Content-Type'].startswith('text/plain')
                pages.add(answer.read().decode())
    page = pages.pop()
    assert not pages, 'every process shows the same sums'
    assert '# TYPE :tensorflow:serving:request_count counter' in page
    assert metric(page, ':tensorflow:serving:request_count', model_name='mnist',
                  status='OK') == 14
    assert metric(page, ':tensorflow:serving:request_count', model_name='nope',
                  status='NOT_FOUND') == 1
    assert metric(page, ':tensorflow:serving:request_latency_count', API='predict',
                  entrypoint='REST', model_name='mnist') == 10
    assert metric(page, ':tensorflow:serving:request_latency_count', API='Predict',
                  entrypoint='GRPC', model_name='mnist') == 4
    assert metric(page, ':graph_mnist:serving:batch_size_count', model_name='mnist') == 14
    assert metric(page, ':graph_mnist:serving:queue_depth', model_name='mnist',
                  signature='serving_default') == 0
    assert 'request_count_total' not in page  # TF's names, not prometheus-client's


def test_a_refused_body_is_answered_to_a_client_that_sends_it_all_first(exported):
    with server_process.Subprocess(exported[1], '--rest_api_num_processes=1',
                                   '--max_body_bytes=1048576') as server:
        big = urllib.request.Request(server.url + '/v1/models/mnist:predict',
                                     data=b'{"instances": [' + b'0,' * 12_000_000 + b'0]}',
                                     headers={'Content-Type': 'application/json'})
        try:
            urllib.request.urlopen(big, timeout=60)
            raise AssertionError('a 24 MB body was accepted')
        except urllib.error.HTTPError as e:  # not "Connection reset by peer"
            assert e.code == 413
            assert 'more than the 1,048,576' in json.loads(e.read())['error']
        assert request(server.url, 'POST', '/v1/models/mnist:predict', ZEROS)[0] == 200


def test_export_writes_tf_servings_warmup_file_and_the_server_replays_both_signatures(
        exported, monkeypatch):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from graph_mnist.serving import servable as versions
    path = os.path.join(exported[1], '1', export.WARMUP)
    logs = [prediction_log_pb2.PredictionLog.FromString(r)
            for r in tf.compat.v1.io.tf_record_iterator(path)]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
        'serving_default', 'from_image']
    replayed = []
    original = versions.Signature.__call__

    def counted(self, inputs):
        replayed.append(self.name)
        return original(self, inputs)
    monkeypatch.setattr(versions.Signature, '__call__', counted)
    servable = versions.Servable('mnist', 1, os.path.join(exported[1], '1'),
                                 versions.Settings(warm_up=True))
    try:
        assert replayed[:2] == ['serving_default', 'from_image']
        digit = servable.signatures['from_image'](
            {'image_bytes': tf.make_ndarray(logs[1].predict_log.request.inputs['image_bytes'])})
        assert digit['digit'].tolist() == [1]  # the warm-up picture is a real 1
    finally:
        servable.close()


def test_stopped_it_ends_cleanly_and_leaves_nothing_behind(exported):
    import signal
    import tempfile
    where = '/dev/shm' if os.path.isdir('/dev/shm') else tempfile.gettempdir()

    def ours():
        return {name for name in os.listdir(where) if name.startswith('graph_mnist_')}
    before = ours()
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT: Ctrl-C
        server = server_process.Subprocess(exported[1], '--rest_api_num_processes=2')
        try:
            assert ours() - before, 'the board and the metrics directory exist while it runs'
            server.process.send_signal(signum)
            assert server.process.wait(60) == 0
        finally:
            server.stop()
        assert 'stopped' in server.log() and 'Traceback' not in server.log()
        assert ours() == before  # the shared board, its states, the metrics: removed
