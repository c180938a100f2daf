"""Training on a cluster: TF_CONFIG, a parameter server and two workers on loopback, the
launcher, a lost parameter server, and what it exposes. Tiny softmax runs, each cluster
in a network namespace of its own with loopback only (the launcher's default:
TensorFlow's servers listen on every interface); every process is stopped."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import run_module
from conftest import run_script
import pytest

from graph_mnist import checkpoints
from graph_mnist import distributed
from graph_mnist import exposure
from graph_mnist import runs

CLUSTER = {'chief': ['127.0.0.1:2222'], 'worker': ['127.0.0.1:2223', '127.0.0.1:2224'],
           'ps': ['127.0.0.1:2225']}


def tf_config(cluster_=CLUSTER, kind='worker', index=0):
    return {'TF_CONFIG': json.dumps({'cluster': cluster_, 'task': {'type': kind,
                                                                   'index': index}})}


def task_of(monkeypatch, environ):
    """The Task of TF_CONFIG as `environ` gives it (TFConfigClusterResolver reads the
    process's environment)."""
    monkeypatch.delenv('TF_CONFIG', raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return distributed.task_from_environment()


def test_tf_config_names_this_task_and_its_place(monkeypatch):
    assert task_of(monkeypatch, {}) is None
    worker = task_of(monkeypatch, tf_config(kind='worker', index=1))
    assert (worker.type, worker.index, worker.is_chief) == ('worker', 1, False)
    assert worker.replicas == 3 and worker.replica == 2  # the chief is replica 0
    assert worker.address == '127.0.0.1:2224' and worker.name == 'worker 1'
    chief = task_of(monkeypatch, tf_config(kind='chief'))
    assert chief.is_chief and chief.replica == 0


def test_tf_config_as_platforms_write_it(monkeypatch):
    """Cloud ML Engine's "master" is the chief, its "environment" ignored; an evaluator
    is outside the training cluster, listed in it or not."""
    master = dict(CLUSTER)
    master['master'] = master.pop('chief')
    text = json.dumps({'cluster': master, 'task': {'type': 'master', 'index': 0},
                       'environment': 'cloud'})
    chief = task_of(monkeypatch, {'TF_CONFIG': text})
    assert chief.is_chief and chief.cluster['chief'] == CLUSTER['chief']
    assert 'master' not in chief.cluster and chief.replicas == 3
    worker = task_of(monkeypatch, tf_config(master, 'worker', 1))
    assert worker.replica == 2 and worker.cluster == CLUSTER
    for cluster_ in (CLUSTER, dict(CLUSTER, evaluator=['127.0.0.1:2226'])):
        evaluator = task_of(monkeypatch, tf_config(cluster_, 'evaluator', 0))
        assert (evaluator.type, evaluator.cluster) == ('evaluator', CLUSTER)
        assert not evaluator.is_chief and evaluator.name == 'evaluator 0'


BAD = [
    ('{"cluster": ', 'TF_CONFIG is not JSON'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}', 'at least one "ps"'),
    ('{"cluster": {"ps": ["a:1"], "worker": ["a:2"]}, "task": {"type": "worker"}}',
     'needs a "chief"'),
    (json.dumps({'cluster': CLUSTER, 'task': {'type': 'tpu', 'index': 0}}),
     "task type 'tpu' is not a job"),
    (json.dumps({'cluster': dict(CLUSTER, master=['a:1']), 'task': {'type': 'ps'}}),
     '"master" and "chief" are one task'),
    (json.dumps({'cluster': CLUSTER, 'task': {'type': 'evaluator', 'index': 1}}),
     'evaluator index 1 is out of range'),
    (json.dumps({'cluster': CLUSTER, 'task': {'type': 'worker', 'index': 2}}),
     'task index 2 is out of range for "worker"'),
    (json.dumps({'cluster': dict(CLUSTER, ps=['nohost']), 'task': {'type': 'ps'}}),
     '"ps" must be a list of "host:port"'),
    (json.dumps({'cluster': dict(CLUSTER, gpu=['a:1']), 'task': {'type': 'ps'}}),
     "jobs ['gpu'] are not ours"),
    ('[]', 'TF_CONFIG must be {"cluster"'),
]


@pytest.mark.parametrize('text, message', BAD, ids=[m for _, m in BAD])
def test_a_bad_tf_config_is_refused_with_what_is_wrong(text, message, monkeypatch):
    with pytest.raises(distributed.ClusterError, match=message.replace('[', r'\[')
                       .replace('(', r'\(')):
        task_of(monkeypatch, {'TF_CONFIG': text})


@pytest.mark.slow  # a training process
def test_a_bad_tf_config_is_one_clear_error_from_the_command(tmp_path):
    result = run_module('graph_mnist.train', '--model=softmax', f'--workdir={tmp_path}/run',
                        env={'TF_CONFIG': BAD[1][0]})
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('E ')]
    assert len(errors) == 1 and 'at least one "ps"' in errors[0]
    assert not os.path.exists(tmp_path / 'run')  # nothing written


def launcher(tmp_path, mnist_dir, *train_args, workers=2):
    return [sys.executable, '-m', 'graph_mnist.cluster', '--ps=1', f'--workers={workers}',
            '--', '--model=softmax', f'--workdir={tmp_path / "run"}', '--vis=none',
            f'--data_dir={mnist_dir}', '--cluster_timeout=60', *train_args]


@pytest.mark.parametrize('sync', [False, True], ids=['asynchronous', 'synchronous'])
def test_a_ps_and_two_workers_train_softmax_on_one_global_step(tmp_path, mnist_dir, sync):
    command = launcher(tmp_path, mnist_dir, '--iterations=600', '--eval_every=100',
                       *(['--sync_replicas'] if sync else []))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for name in ('ps 0', 'chief', 'worker 0'):
        assert any(line.startswith(f'[{name}] ') for line in lines), name
    history = runs.read_history(str(tmp_path / 'run'))
    assert history['status'] == 'finished' and history['final_step'] >= 600
    steps = history['test']['step']
    assert steps[0] == 0 and all(a < b for a, b in zip(steps, steps[1:]))
    assert history['final_test_accuracy'] > 0.85
    chief_steps = history['cluster']['chief_steps']
    worker_steps = int(next(line.split(': ')[1].split()[0] for line in lines
                            if line.startswith('[worker 0]') and 'steps of its own' in line))
    assert worker_steps > 50 and chief_steps > 50  # both trained
    if sync:  # every global step aggregates a gradient from each of the two
        assert chief_steps + worker_steps == pytest.approx(2 * history['final_step'], abs=4)
    else:  # each step of either adds one to the global step
        assert chief_steps + worker_steps == pytest.approx(history['final_step'], abs=4)
    assert history['cluster']['sync_replicas'] is sync
    assert checkpoints.latest(str(tmp_path / 'run'))[1] == history['final_step']


def test_an_evaluator_reads_each_checkpoint_as_the_chief_measured_it(tmp_path, mnist_dir):
    """TF_CONFIG as Cloud ML Engine wrote it ("master") and an evaluator task: the chief
    alone trains (so nothing moves between its checkpoint and its own evaluation) and
    evaluates; the evaluator measures the same checkpoints to the same figures."""
    command = launcher(tmp_path, mnist_dir, '--iterations=400', '--eval_every=100',
                       workers=1)
    command[3:3] = ['--evaluators=1', '--chief_job=master']
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert any(line.startswith('[evaluator 0] ') for line in result.stdout.splitlines())
    chief = runs.read_history(str(tmp_path / 'run'))
    evaluator = runs.read_history(str(tmp_path / 'run' / 'evaluator'))
    assert chief['status'] == 'finished' and evaluator['status'] == 'finished'
    assert evaluator['final_step'] == chief['final_step'] >= 400
    measured = dict(zip(chief['test']['step'], chief['test']['accuracy']))
    common = [s for s in evaluator['test']['step'] if s in measured]
    assert len(common) >= 2 and common[-1] == chief['final_step']
    for step, accuracy in zip(evaluator['test']['step'], evaluator['test']['accuracy']):
        if step in measured:
            assert accuracy == pytest.approx(measured[step], abs=1e-6), step
    assert os.path.isfile(tmp_path / 'run' / 'evaluator' / 'history.png')
    assert any(name.startswith('events.out.tfevents')
               for name in os.listdir(tmp_path / 'run' / 'evaluator'))


def processes_of(marker):
    """The pids whose command line holds `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def listening(tables=('/proc/net/tcp', '/proc/net/tcp6')):
    """{(address, port)} of the TCP sockets listening in this process's network view."""
    found = set()
    for table in tables:
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == '0A':  # LISTEN
                found.add(parse_address(fields[1]))
    return found


def parse_address(text):
    """'0100007F:1F90' -> ('127.0.0.1', 8080); IPv6 as the kernel writes it, 32 hex digits
    in four little-endian words."""
    import ipaddress
    address, port = text.split(':')
    raw = bytes.fromhex(address)
    raw = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def outside_loopback(sockets):
    return {(a, p) for a, p in sockets if not exposure.is_loopback(a)
            and not a.startswith('::ffff:127.')}


def test_proc_net_tcp_addresses_are_read_as_the_kernel_writes_them():
    assert parse_address('0100007F:1F90') == ('127.0.0.1', 8080)
    assert parse_address('00000000:A2B1') == ('0.0.0.0', 41649)
    assert parse_address('00000000000000000000000001000000:0016') == ('::1', 22)
    assert parse_address('00000000000000000000000000000000:0050') == ('::', 80)
    assert outside_loopback({('0.0.0.0', 1), ('127.0.0.1', 2), ('::1', 3), ('::', 4),
                             ('10.0.0.2', 5)}) == {('0.0.0.0', 1), ('::', 4), ('10.0.0.2', 5)}


def test_the_launcher_opens_nothing_outside_loopback_and_stops_every_task_on_ctrl_c(
        tmp_path, mnist_dir):
    """Its defaults: the tasks in a private network, so while they train no new socket
    listens outside loopback in this test's network view; Ctrl-C then stops them all."""
    marker = str(tmp_path / 'run')
    before = outside_loopback(listening())
    process = subprocess.Popen(launcher(tmp_path, mnist_dir, '--iterations=1000000'),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:  # until the chief trains
            if line.startswith('[chief]') and 'accuracy' in line:
                break
        assert len(processes_of(marker)) == 4  # the launcher and its three tasks
        assert outside_loopback(listening()) - before == set()
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, rest[-2000:]
    assert 'every task has stopped' in rest
    time.sleep(0.5)
    assert processes_of(marker) == []
    history = runs.read_history(marker)
    assert history['status'] == 'interrupted'
    assert checkpoints.latest(marker) is not None  # --resume goes on from there


def test_without_a_private_network_the_launcher_refuses_in_one_line(tmp_path):
    """No unshare on the PATH: no silent fallback to every interface, one line saying
    what would be exposed and which flag accepts it, exit 1, nothing started."""
    result = run_module('graph_mnist.cluster', '--ps=1', '--workers=2', '--',
                        '--model=softmax', f'--workdir={tmp_path / "run"}',
                        env={'PATH': str(tmp_path)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('E cannot run the cluster in a private '
                                                   'network: unshare and ip not found')
    assert 'listen on all interfaces' in lines[0] and '--expose_on_network' in lines[0]
    assert not (tmp_path / 'run').exists()


def test_a_task_outside_the_private_network_says_it_listens_everywhere(monkeypatch,
                                                                         caplog):
    """A task started by hand (TF_CONFIG) warns once; inside the launcher's private
    network it does not. TensorFlow's server is replaced: nothing listens here."""
    started = []
    monkeypatch.setattr(distributed.tf.distribute, 'Server',
                        lambda *args, **kwargs: started.append(kwargs) or object())
    task = task_of(monkeypatch, tf_config(kind='worker', index=0))
    monkeypatch.delenv(exposure.PRIVATE_NETWORK, raising=False)
    with caplog.at_level('WARNING'):
        distributed.start_server(task)
    warned = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert len(warned) == 1
    assert 'listens on port 2223 of every interface, unauthenticated' in warned[0]
    assert 'private network' in warned[0]
    caplog.clear()
    monkeypatch.setenv(exposure.PRIVATE_NETWORK, '1')
    with caplog.at_level('WARNING'):
        distributed.start_server(task)
    assert not [r for r in caplog.records if r.levelname == 'WARNING']
    assert len(started) == 2


def test_loopback_addresses():
    assert all(map(exposure.is_loopback, ['127.0.0.1', '127.8.8.8', '::1', '[::1]',
                                          'localhost']))
    assert not any(map(exposure.is_loopback, ['0.0.0.0', '::', '10.0.0.1', 'example.org']))


def test_a_lost_parameter_server_stops_the_others_with_a_message(tmp_path, mnist_dir):
    """scripts/cluster_drill.py's ps_loss part: the ps killed at 30% of the steps."""
    workdir = tmp_path / 'drill'
    result = run_script('cluster_drill.py', '--model=softmax', '--iterations=1500',
                        '--parts=ps_loss', f'--workdir={workdir}', f'--data_dir={mnist_dir}',
                        '--cluster_timeout=60')
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((workdir / 'drill.json').read_text())['ps_loss']
    assert report['ps_killed_at'] >= 450
    for name in ('chief', 'worker 0'):
        stopped = report['ps_killed'][name]
        assert stopped['exit_code'] == 1  # by itself: not a hang, not a kill
        assert stopped['seconds_to_stop'] < 30  # well within --cluster_timeout
        assert 'lost the parameter servers (127.0.0.1:' in stopped['message']
        assert '--resume' in stopped['message']
    logs = ''.join(p.read_text() for p in (workdir / 'ps_loss' / 'logs').iterdir())
    assert 'Traceback' not in logs
    assert report['checkpoint_after_ps_loss'] is None or \
        report['checkpoint_after_ps_loss'] <= report['ps_killed_at']


def test_an_evaluator_without_checkpoints_gives_up_with_a_message(tmp_path, mnist_dir):
    """No checkpoint of the chief within --cluster_timeout: one error, its books kept."""
    from graph_mnist import data
    from graph_mnist import evaluator
    from graph_mnist import training
    config = training.Config('softmax', iterations=100, vis='none')
    mnist = data.load(mnist_dir, log=lambda message: None)
    with pytest.raises(distributed.ClusterError, match='no new checkpoint of the chief'):
        evaluator.evaluate(config, str(tmp_path), mnist, lambda: False, timeout=1)
    assert runs.read_history(str(tmp_path / 'evaluator'))['status'] == 'interrupted'
