"""The Kubernetes manifest: valid against Kubernetes' own schemas (kubernetes-validate),
every pod's TF_CONFIG as the image's entrypoint computes it naming the manifest's own
pods, and the manifest's cluster trained here to the end (its pods in a private network
with their host names mapped to loopback, scripts/rehearse_kubernetes.py)."""

import json
import os

from conftest import run_script
import pytest
import yaml

from graph_mnist import pod
from graph_mnist import runs

ROOT = os.path.join(os.path.dirname(__file__), '..')
MANIFEST = os.path.join(ROOT, 'deploy', 'kubernetes', 'cluster.yaml')


def documents():
    with open(MANIFEST, encoding='utf-8') as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_every_object_is_valid_against_the_kubernetes_schemas():
    import kubernetes_validate
    kinds = []
    for document in documents():
        kubernetes_validate.validate(document, '1.31.0', strict=True)  # raises if not
        kinds.append(document['kind'])
    assert sorted(set(kinds)) == ['Job', 'NetworkPolicy', 'PersistentVolumeClaim', 'Service']
    broken = dict(documents()[-1])
    broken['spec'] = dict(broken['spec'], completions='one')
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, '1.31.0', strict=True)


def test_every_pods_tf_config_names_the_manifests_own_pods():
    import rehearse_kubernetes
    docs = documents()
    [service] = [d for d in docs if d['kind'] == 'Service']
    assert service['spec']['clusterIP'] == 'None'
    jobs = {d['metadata']['name']: d for d in docs if d['kind'] == 'Job'}
    pods = rehearse_kubernetes.pods(MANIFEST)
    hostnames = {hostname for _, hostname, _, _ in pods}
    args = {tuple(a) for _, _, _, a in pods}
    assert len(args) == 1  # the same command on every task, as TensorFlow wants
    configs = {}
    for name, hostname, env, _ in pods:
        job = jobs[name.rpartition('-')[0]]
        assert job['spec']['completionMode'] == 'Indexed'
        assert job['spec']['template']['spec']['subdomain'] == service['metadata']['name']
        labels = job['spec']['template']['metadata']['labels']
        assert all(labels[k] == v for k, v in service['spec']['selector'].items())
        config = pod.from_environment(env)
        assert config['task'] == {'type': env['GRAPH_MNIST_TASK'],
                                  'index': int(env['JOB_COMPLETION_INDEX'])}
        configs[name] = config
    clusters = {json.dumps(c['cluster'], sort_keys=True) for c in configs.values()}
    assert len(clusters) == 1  # every pod sees the same cluster
    cluster = json.loads(clusters.pop())
    addresses = [a for job in cluster.values() for a in job]
    assert {a.rpartition(':')[0] for a in addresses} == hostnames - {
        h for h in hostnames if '-evaluator-' in h}  # the evaluator is outside it
    assert len({a.rpartition(':')[2] for a in addresses}) == len(addresses)  # own ports
    # the NetworkPolicy admits the cluster's pods only
    [policy] = [d for d in docs if d['kind'] == 'NetworkPolicy']
    assert policy['spec']['podSelector']['matchLabels'] == service['spec']['selector']
    assert policy['spec']['ingress'] == [{'from': [{'podSelector': {
        'matchLabels': service['spec']['selector']}}]}]


def test_a_pod_without_its_task_is_one_clear_error():
    with pytest.raises(pod.PodError, match='GRAPH_MNIST_TASK, GRAPH_MNIST_NAME'):
        pod.from_environment({})
    env = {'GRAPH_MNIST_TASK': 'worker', 'GRAPH_MNIST_NAME': 'm', 'GRAPH_MNIST_SERVICE': 's',
           'GRAPH_MNIST_TASKS': 'chief=1,worker=1,ps=1', 'JOB_COMPLETION_INDEX': '1'}
    with pytest.raises(pod.PodError, match='JOB_COMPLETION_INDEX=1 is out of range'):
        pod.from_environment(env)
    with pytest.raises(pod.PodError, match='expected type=count'):
        pod.from_environment(dict(env, GRAPH_MNIST_TASKS='chief=1,gpu=2'))


@pytest.mark.slow  # a cluster of four processes trains softmax
def test_the_manifests_cluster_trains_here_to_the_end(tmp_path, mnist_dir):
    result = run_script('rehearse_kubernetes.py', f'--workdir={tmp_path / "run"}',
                        f'--data_dir={mnist_dir}', '--timeout=400', '--',
                        '--iterations=300', '--eval_every=100', '--cluster_timeout=60')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    codes = json.loads(result.stdout.strip().splitlines()[-1])['exit_codes']
    assert codes == {'mnist-ps-0': 0, 'mnist-chief-0': 0, 'mnist-worker-0': 0,
                     'mnist-evaluator-0': 0}
    chief = runs.read_history(str(tmp_path / 'run'))
    evaluator = runs.read_history(str(tmp_path / 'run' / 'evaluator'))
    assert chief['status'] == 'finished' and chief['final_test_accuracy'] > 0.85
    assert evaluator['status'] == 'finished' and evaluator['final_step'] >= 300
    # --nochief_evaluates: the chief measured only the end; the evaluator the checkpoints
    assert chief['test']['step'] == [chief['final_step']]
    assert evaluator['final_test_accuracy'] == pytest.approx(chief['final_test_accuracy'])
    assert 'TF_CONFIG={"cluster": {"chief": ["mnist-chief-0.mnist:2222"]' in result.stdout


def test_the_rehearsal_refuses_a_missing_manifest_in_one_line(tmp_path):
    result = run_script('rehearse_kubernetes.py', f'--manifest={tmp_path / "none.yaml"}',
                        f'--workdir={tmp_path / "run"}', f'--data_dir={tmp_path}')
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('E ')]
    assert len(errors) == 1 and 'No such file or directory' in errors[0]


@pytest.mark.slow  # builds the wheel (setuptools fetched by pip's build isolation)
def test_the_images_files_build_the_package_with_the_pods_entrypoint(tmp_path):
    """What deploy/Dockerfile copies into the image is enough to install the package,
    and the package has the entrypoint it runs (no Docker engine here to build it)."""
    import shutil
    import subprocess
    import sys
    import zipfile
    with open(os.path.join(ROOT, 'deploy', 'Dockerfile'), encoding='utf-8') as f:
        lines = [line.split() for line in f if line.startswith(('COPY', 'ENTRYPOINT'))]
    context = tmp_path / 'context'
    context.mkdir()
    for words in (w for w in lines if w[0] == 'COPY'):
        for name in words[1:-1]:
            source = os.path.join(ROOT, name)
            copy = shutil.copytree if os.path.isdir(source) else shutil.copy
            copy(source, context / name)
    result = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w',
                             str(tmp_path), str(context)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob('graph_mnist-*.whl')
    entry_points = zipfile.ZipFile(wheel).read(next(
        n for n in zipfile.ZipFile(wheel).namelist() if n.endswith('entry_points.txt')))
    [entrypoint] = [w for w in lines if w[0] == 'ENTRYPOINT']
    command = json.loads(' '.join(entrypoint[1:]))[0]
    assert f'{command} = graph_mnist.commands:pod' in entry_points.decode()
    assert 'graph-mnist-data = graph_mnist.commands:data' in entry_points.decode()
