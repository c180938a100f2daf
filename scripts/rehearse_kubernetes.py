r"""Runs a Kubernetes manifest's training pods on this machine: every pod of every Job
of deploy/kubernetes/cluster.yaml, with the environment and arguments the manifest
gives it, in a private network (loopback only) where the pods' host names
(mnist-ps-0.mnist, ...) resolve to 127.0.0.1 (a mount namespace of its own, with its own
/etc/hosts). The same command the image runs (python -m graph_mnist.pod), so the
manifest's cluster trains here to the end, as it would on Kubernetes.

    python scripts/rehearse_kubernetes.py --data_dir=~/mnist --workdir=runs/k8s -- --iterations=500

--data_dir and --workdir replace the manifest's /opt/mnist and /runs/cluster; the
arguments after -- are added to every pod's. Each pod's output is shown behind its name;
the exit code is 0 when every pod ended with 0 (as every Job completing).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INSIDE = 'GRAPH_MNIST_REHEARSAL'


def pods(manifest):
    """[(name, hostname, env, args)] of every pod of the manifest's Indexed Jobs."""
    import yaml

    from graph_mnist.errors import UserError
    try:
        with open(manifest, encoding='utf-8') as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f'--manifest={manifest}: {getattr(e, "strerror", None) or e}') from None
    found = []
    for job in (d for d in documents if d.get('kind') == 'Job'):
        spec = job['spec']
        [container] = spec['template']['spec']['containers']
        subdomain = spec['template']['spec'].get('subdomain')
        for index in range(spec.get('completions', 1)):
            env = {e['name']: e['value'] for e in container.get('env', [])}
            env['JOB_COMPLETION_INDEX'] = str(index)
            name = f'{job["metadata"]["name"]}-{index}'
            found.append((name, f'{name}.{subdomain}', env, list(container.get('args', []))))
    return found


def main(argv):
    from absl import flags

    from graph_mnist import cluster
    from graph_mnist import exposure
    from graph_mnist.errors import UserError
    FLAGS = flags.FLAGS
    extra = argv[1:]
    manifest = FLAGS.manifest
    workdir = os.path.abspath(os.path.expanduser(FLAGS.workdir))
    data_dir = os.path.abspath(os.path.expanduser(FLAGS.data_dir))
    found = pods(manifest)
    if not found:
        raise UserError(f'--manifest={manifest} has no Job')
    if not os.environ.get(INSIDE):  # again, in a network and mount namespace of its own
        reason = cluster.why_no_private_network()
        if reason:
            raise UserError(f'cannot make the private network the pods run in: {reason}')
        hosts = tempfile.NamedTemporaryFile('w', suffix='.hosts', delete=False)
        hosts.write('127.0.0.1 localhost\n' + ''.join(f'127.0.0.1 {h}\n'
                                                      for _, h, _, _ in found))
        hosts.close()
        try:
            return subprocess.call(
                ['unshare', '--net', '--mount', '--map-root-user', '--', 'sh', '-c',
                 f'mount --bind {hosts.name} /etc/hosts && ip link set lo up && exec "$0" "$@"',
                 sys.executable, *sys.argv],
                env=dict(os.environ, **{INSIDE: '1', exposure.PRIVATE_NETWORK: '1'}))
        finally:
            os.remove(hosts.name)
    processes, lines = [], []

    def show(name, process):
        for line in process.stdout:
            lines.append(f'[{name}] {line}')
            sys.stdout.write(f'[{name}] {line}')
            sys.stdout.flush()
    for name, _, env, args in found:
        args = [a.replace('/opt/mnist', data_dir).replace('/runs/cluster', workdir)
                for a in args] + extra
        process = subprocess.Popen([sys.executable, '-m', 'graph_mnist.pod', *args],
                                   env=dict(os.environ, **env), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=show, args=(name, process), daemon=True).start()
        processes.append((name, process))
    deadline = time.monotonic() + FLAGS.timeout
    try:
        while time.monotonic() < deadline and any(p.poll() is None for _, p in processes):
            time.sleep(0.2)
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    codes = {name: p.wait() for name, p in processes}
    print(json.dumps({'exit_codes': codes}))
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == '__main__':
    from absl import flags

    from graph_mnist import cli

    def define_flags():
        flags.DEFINE_string('manifest', os.path.join(HERE, '..', 'deploy', 'kubernetes',
                                                     'cluster.yaml'), 'The manifest.')
        flags.DEFINE_string('workdir', None, 'Replaces the manifest\'s /runs/cluster.')
        flags.DEFINE_string('data_dir', None, 'Replaces the manifest\'s /opt/mnist.')
        flags.DEFINE_float('timeout', 1800, 'Longest the pods may run, in seconds.')
        flags.mark_flags_as_required(['workdir', 'data_dir'])

    cli.run(main, define_flags, positional='')
