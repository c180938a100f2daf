"""One decision for every serving process: a new version served by all of them at once
(no client answered by an older version after a newer one), status the same from every
process, loads retried, a version that cannot be loaded given up with its reason, a
second server on busy ports refused, the process count from the CPU quota. Each server
runs on free loopback ports and is stopped at the end."""

import os
import shutil
import threading
import time

from conftest import run_module
import grpc
import numpy as np
import pytest
import server_process
from test_grpc import predict_request
from test_serve import request

from graph_mnist import machine


def statuses(server):
    return {v['version']: v['state'] for v in
            request(server.url, 'GET', '/v1/models/mnist')[1]['model_version_status']}


def wait_for(server, wanted, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if statuses(server) == wanted:
            return True
        time.sleep(0.05)
    return False


def test_every_process_switches_at_once_so_no_answer_comes_from_an_older_version(
        exported, tmp_path):
    workdir, base, _, _ = exported
    mine = str(tmp_path / 'exported')
    shutil.copytree(os.path.join(base, '1'), os.path.join(mine, '1'))
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    zeros = predict_request(images=np.zeros((1, 28, 28, 1), np.float32))
    seen, failures, stop = [], [], threading.Event()
    with server_process.Subprocess(mine, '--rest_api_num_processes=2',
                                   '--file_system_poll_wait_seconds=0.1') as server:
        # channels are connections: the kernel spreads them over both processes, and a
        # client going round them in turn asks each process one after the other
        channels = [grpc.insecure_channel(server.grpc_target,
                                          options=[('grpc.use_local_subchannel_pool', 1)])
                    for _ in range(8)]
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]

        def client(offset):
            k = offset
            while not stop.is_set():
                try:
                    answer = stubs[k % len(stubs)].Predict(zeros, timeout=30)
                    seen.append((offset, answer.model_spec.version.value))
                except grpc.RpcError as e:
                    failures.append(e.details())
                k += 1
        clients = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for c in clients:
            c.start()
        try:
            time.sleep(1)
            result = run_module('graph_mnist.export', f'--workdir={workdir}',
                                f'--export_dir={mine}')
            assert result.returncode == 0, result.stderr
            assert wait_for(server, {'2': 'AVAILABLE', '1': 'END'})
            time.sleep(0.5)
        finally:
            stop.set()
            for c in clients:
                c.join(60)
            for c in channels:
                c.close()
        # status and metadata the same whichever process answers (fresh connections)
        answers = {str(request(server.url, 'GET', '/v1/models/mnist')[1]) for _ in range(20)}
        versions = {request(server.url, 'GET', '/v1/models/mnist/metadata')[1]['model_spec'][
            'version'] for _ in range(20)}
    assert failures == []
    for offset in range(3):
        mine_seen = [v for o, v in seen if o == offset]
        assert mine_seen[0] == 1 and mine_seen[-1] == 2
        assert mine_seen == sorted(mine_seen), 'an older version answered after a newer one'
    assert len(answers) == 1 and versions == {'2'}
    assert 'serving mnist version 2' in server.log() and 'in 2 processes' in server.log()


def test_a_version_copied_in_two_steps_is_loaded_on_a_retry(exported, tmp_path):
    base = exported[1]
    mine = tmp_path / 'exported'
    shutil.copytree(os.path.join(base, '1'), mine / '1')
    with server_process.Subprocess(str(mine), '--rest_api_num_processes=1',
                                   '--file_system_poll_wait_seconds=0.1',
                                   '--load_retry_interval_micros=300000') as server:
        # a careless copy: the graph lands first, its variables a moment later
        (mine / '2').mkdir()
        shutil.copy(os.path.join(base, '1', 'saved_model.pb'), mine / '2')
        time.sleep(1.0)
        assert statuses(server) == {'2': 'LOADING', '1': 'AVAILABLE'}
        shutil.copytree(os.path.join(base, '1', 'variables'), mine / '2' / 'variables')
        assert wait_for(server, {'2': 'AVAILABLE', '1': 'END'})
        assert 'could not be loaded' in server.log() and 'trying again' in server.log()


def test_a_version_that_cannot_be_loaded_is_given_up_with_its_reason_and_the_old_serves(
        exported, tmp_path):
    base = exported[1]
    mine = tmp_path / 'exported'
    shutil.copytree(os.path.join(base, '1'), mine / '1')
    with server_process.Subprocess(str(mine), '--rest_api_num_processes=2',
                                   '--file_system_poll_wait_seconds=0.1',
                                   '--max_num_load_retries=1',
                                   '--load_retry_interval_micros=100000') as server:
        (mine / '2').mkdir()
        (mine / '2' / 'saved_model.pb').write_bytes(b'not a SavedModel')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and statuses(server).get('2') != 'END':
            time.sleep(0.05)
        status = request(server.url, 'GET', '/v1/models/mnist/versions/2')[1]
        [two] = status['model_version_status']
        assert two['state'] == 'END' and two['status']['error_code'] == 'UNKNOWN'
        assert two['status']['error_message']
        assert statuses(server)['1'] == 'AVAILABLE'
        code, answer, _ = request(server.url, 'POST', '/v1/models/mnist:predict',
                                  {'instances': np.zeros((1, 28, 28, 1)).tolist()})
        assert code == 200
    assert 'version 2 of mnist cannot be loaded' in server.log()


def test_a_second_server_on_busy_ports_is_refused_in_one_line(exported):
    with server_process.Subprocess(exported[1], '--rest_api_num_processes=1') as server:
        rest_port = server.url.rsplit(':', 1)[1]
        for flags in ([f'--rest_api_port={rest_port}', '--port=0'],
                      ['--rest_api_port=0', f'--port={server.grpc_port}']):
            result = run_module('graph_mnist.serve', f'--model_base_path={exported[1]}',
                                *flags)
            assert result.returncode == 1, result.stderr
            assert 'is another server running there?' in result.stderr
            assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('files, cores', [
    ({'cpu.max': '200000 100000\n'}, 2),
    ({'cpu.max': '150000 100000\n'}, 2),   # 1.5 CPUs: two processes share them
    ({'cpu.max': '50000 100000\n'}, 1),
    ({'cpu.max': 'max 100000\n'}, None),   # no quota: the cores
    ({'cpu/cpu.cfs_quota_us': '100000\n', 'cpu/cpu.cfs_period_us': '100000\n'}, 1),
    ({'cpu/cpu.cfs_quota_us': '-1\n', 'cpu/cpu.cfs_period_us': '100000\n'}, None),
    ({}, None),
])
def test_the_process_count_follows_the_cpu_quota(tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    everything = len(os.sched_getaffinity(0))
    assert machine.usable_cores(str(tmp_path)) == min(cores or everything, everything)


def test_a_serving_process_that_ends_does_not_hold_back_the_next_version(exported, tmp_path):
    import signal
    import subprocess
    workdir, base, _, _ = exported
    mine = str(tmp_path / 'exported')
    shutil.copytree(os.path.join(base, '1'), os.path.join(mine, '1'))
    with server_process.Subprocess(mine, '--rest_api_num_processes=2',
                                   '--file_system_poll_wait_seconds=0.1') as server:
        children = subprocess.run(['ps', '--ppid', str(server.process.pid), '-o', 'pid='],
                                  capture_output=True, text=True).stdout.split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)
        result = run_module('graph_mnist.export', f'--workdir={workdir}',
                            f'--export_dir={mine}')
        assert result.returncode == 0, result.stderr
        assert wait_for(server, {'2': 'AVAILABLE', '1': 'END'})
        assert request(server.url, 'POST', '/v1/models/mnist:predict',
                       {'instances': np.zeros((1, 28, 28, 1)).tolist()})[0] == 200


CONFIG = """model_config_list {
  config { name: 'digits' base_path: '%(digits)s'
           model_version_policy { specific { versions: [1, 2] } }
           version_labels { key: 'stable' value: %(stable)d }
           version_labels { key: 'canary' value: 2 } }
  %(more)s
}"""


def test_two_models_with_labels_and_the_config_edited_under_load(exported, tmp_path):
    """TF Serving's deployment: one config, two models, labels pinned to versions,
    answered on REST and gRPC by the real clients; then the file edited while clients
    ask (a label moved, a model added): no request fails, and no client sees an older
    version after a newer one through the same name or label."""
    base = exported[1]
    for model, numbers in [('digits', (1, 2)), ('letters', (1,)), ('added', (3,))]:
        for v in numbers:
            shutil.copytree(os.path.join(base, '1'), tmp_path / model / str(v))
    path = tmp_path / 'models.config'
    digits = str(tmp_path / 'digits')
    path.write_text(CONFIG % {'digits': digits, 'stable': 1, 'more': (
        "config { name: 'letters' base_path: '%s' }" % (tmp_path / 'letters'))})
    from tensorflow_serving.apis import get_model_status_pb2
    from tensorflow_serving.apis import model_service_pb2_grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    zeros = np.zeros((1, 28, 28, 1), np.float32)
    asks = [('digits', None), ('digits', 'stable'), ('digits', 'canary'), ('letters', None),
            ('added', None)]
    seen, failures, stop = {ask: [] for ask in asks}, [], threading.Event()
    with server_process.Subprocess(None, f'--model_config_file={path}',
                                   '--model_config_file_poll_wait_seconds=1',
                                   '--file_system_poll_wait_seconds=0.2',
                                   '--rest_api_num_processes=2') as server:
        channel = grpc.insecure_channel(server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        # REST: the labels' URLs; gRPC: version_label
        assert request(server.url, 'GET', '/v1/models/digits/labels/stable')[1] == {
            'model_version_status': [{'version': '1', 'state': 'AVAILABLE', 'status': {
                'error_code': 'OK', 'error_message': ''}}]}
        metadata = request(server.url, 'GET', '/v1/models/digits/labels/canary/metadata')[1]
        assert metadata['model_spec']['version'] == '2'
        status, answer, _ = request(server.url, 'POST', '/v1/models/digits/labels/canary'
                                    ':predict', {'instances': zeros.tolist()})
        assert status == 200 and len(answer['predictions'][0]['probabilities']) == 10
        assert request(server.url, 'GET', '/v1/models/letters')[0] == 200
        assert request(server.url, 'GET', '/v1/models/digits/labels/beta')[0] == 400
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        asked = get_model_status_pb2.GetModelStatusRequest()
        asked.model_spec.name, asked.model_spec.version_label = 'digits', 'canary'
        assert [s.version for s in models.GetModelStatus(asked).model_version_status] == [2]
        answer = stub.Predict(predict_request(images=zeros, name='digits', label='stable'),
                              timeout=30)
        assert answer.model_spec.version.value == 1

        def client(ask):
            """Goes round connections of its own (the kernel spreads them over both
            processes), so that it asks each process in turn."""
            name, label = ask
            channels = [grpc.insecure_channel(server.grpc_target,
                                              options=[('grpc.use_local_subchannel_pool', 1)])
                        for _ in range(4)]
            stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    answer = stubs[k % 4].Predict(predict_request(images=zeros, name=name,
                                                                  label=label), timeout=30)
                    seen[ask].append(answer.model_spec.version.value)
                except grpc.RpcError as e:
                    if seen[ask] or name != 'added':  # added: not served at first
                        failures.append((ask, e.details()))
            for c in channels:
                c.close()
        clients = [threading.Thread(target=client, args=(ask,)) for ask in asks]
        for c in clients:
            c.start()
        try:
            time.sleep(1)
            path.write_text(CONFIG % {'digits': digits, 'stable': 2, 'more': (
                "config { name: 'letters' base_path: '%s' } "
                "config { name: 'added' base_path: '%s' }" % (tmp_path / 'letters',
                                                             tmp_path / 'added'))})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    request(server.url, 'GET', '/v1/models/added/metadata')[0] == 200 and
                    request(server.url, 'GET', '/v1/models/digits/labels/stable/metadata')[1]
                    ['model_spec']['version'] == '2'):
                time.sleep(0.1)
            time.sleep(1.5)  # the added model under load too
            status, answer, _ = request(server.url, 'GET', '/v1/models/added')
        finally:
            stop.set()
            for c in clients:
                c.join(60)
            channel.close()
    assert status == 200 and answer['model_version_status'][0]['version'] == '3'
    assert failures == []
    assert seen[('digits', 'stable')][0] == 1 and seen[('digits', 'stable')][-1] == 2
    for ask, versions in seen.items():  # under load, each in order
        assert len(versions) > (10 if ask[0] == 'added' else 20), ask
        assert versions == sorted(versions), ask
    assert set(seen[('added', None)]) == {3}
    assert set(seen[('digits', 'canary')]) == {2} and set(seen[('digits', None)]) == {2}
    assert 'model added added' in server.log()


def children(pid):
    """The processes `pid` started, from any of its threads."""
    found = []
    for task in os.listdir(f'/proc/{pid}/task'):
        with open(f'/proc/{pid}/task/{task}/children') as f:
            found += [int(p) for p in f.read().split()]
    return found


def test_a_serving_process_that_stops_following_is_restarted_and_the_swap_goes_on(
        exported, tmp_path):
    """A process alive but stuck (stopped here) would hold back every later version:
    past --load_timeout_seconds without following a decision, the first process kills
    it and starts it again, and the new version is served by all."""
    import signal
    base = exported[1]
    mine = tmp_path / 'exported'
    shutil.copytree(os.path.join(base, '1'), mine / '1')
    with server_process.Subprocess(str(mine), '--rest_api_num_processes=2',
                                   '--file_system_poll_wait_seconds=0.1',
                                   '--load_timeout_seconds=3') as server:
        [stuck] = children(server.process.pid)
        os.kill(stuck, signal.SIGSTOP)
        shutil.copytree(os.path.join(base, '1'), mine / '2')
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and 'serving mnist version 2' not in server.log():
            time.sleep(0.2)
        assert 'serving process 1 has not followed the decisions' in server.log()
        assert 'serving mnist version 2' in server.log() and 'in 2 processes' in server.log()
        [again] = children(server.process.pid)
        assert again != stuck
        assert wait_for(server, {'2': 'AVAILABLE', '1': 'END'})
        versions = {request(server.url, 'GET', '/v1/models/mnist/metadata')[1]['model_spec'][
            'version'] for _ in range(20)}
    assert versions == {'2'}
