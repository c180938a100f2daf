r"""A Kubernetes pod's entrypoint: its TF_CONFIG computed from its job and index, then
graph_mnist.train with the arguments given.

    python -m graph_mnist.pod --model=conv_dropout --workdir=/runs/cluster

deploy/kubernetes/cluster.yaml runs the cluster as Indexed Jobs (one per task type)
behind a headless Service, so pod i of Job `<name>-<type>` is reachable as
`<name>-<type>-<i>.<service>`. Each container says what it is in its environment:

    GRAPH_MNIST_TASK       chief, worker, ps or evaluator (its Job's task type)
    JOB_COMPLETION_INDEX   its index (Kubernetes sets it in an Indexed Job)
    GRAPH_MNIST_NAME       the Jobs' common prefix, e.g. mnist
    GRAPH_MNIST_SERVICE    the headless Service, e.g. mnist
    GRAPH_MNIST_TASKS      how many of each: chief=1,worker=1,ps=1
    GRAPH_MNIST_PORT       the first task's port (default 2222)

Every task has a port of its own (the first port plus its place: chief, workers, ps), so
the same cluster also runs on one machine with its host names mapped to loopback.
The evaluator is outside the training cluster, as TensorFlow defines it.

`graph-mnist-pod` is `python -m graph_mnist.pod`: the same program.
"""

import json
import os
import sys

JOBS = ('chief', 'worker', 'ps')
TYPES = (*JOBS, 'evaluator')


class PodError(Exception):
    """The pod's environment does not say what it is; the message says what is wrong."""


def counts(text):
    """{'chief': 1, 'worker': 1, 'ps': 1} of "chief=1,worker=1,ps=1"."""
    found = {}
    for part in filter(None, (p.strip() for p in text.split(','))):
        job, _, n = part.partition('=')
        if job not in TYPES or not n.isdigit():
            raise PodError(f'GRAPH_MNIST_TASKS={text!r}: expected type=count with types '
                           f'{list(TYPES)}, e.g. chief=1,worker=1,ps=1')
        found[job] = int(n)
    return found


def tf_config(task, index, name, service, tasks, port=2222):
    """TF_CONFIG (a dict) of pod `index` of the `task` Job."""
    cluster, offset = {}, 0
    for job in JOBS:
        if tasks.get(job):
            cluster[job] = [f'{name}-{job}-{i}.{service}:{port + offset + i}'
                            for i in range(tasks[job])]
            offset += tasks[job]
    if task not in TYPES:
        raise PodError(f'GRAPH_MNIST_TASK={task!r}: one of {list(TYPES)}')
    if not 0 <= index < max(1, tasks.get(task, 0)):
        raise PodError(f'JOB_COMPLETION_INDEX={index} is out of range for {tasks.get(task, 0)} '
                       f'{task} tasks (GRAPH_MNIST_TASKS)')
    return {'cluster': cluster, 'task': {'type': task, 'index': index}}


def from_environment(environ):
    """TF_CONFIG (a dict) from a pod's environment."""
    missing = [k for k in ('GRAPH_MNIST_TASK', 'GRAPH_MNIST_NAME', 'GRAPH_MNIST_SERVICE',
                           'GRAPH_MNIST_TASKS') if not environ.get(k)]
    if missing:
        raise PodError(f'{", ".join(missing)} not set: the pod\'s manifest names its task '
                       f'(deploy/kubernetes/cluster.yaml)')
    index, port = environ.get('JOB_COMPLETION_INDEX', '0'), environ.get('GRAPH_MNIST_PORT',
                                                                         '2222')
    if not index.isdigit() or not port.isdigit():
        raise PodError(f'JOB_COMPLETION_INDEX={index!r} and GRAPH_MNIST_PORT={port!r} must be '
                       f'whole numbers')
    return tf_config(environ['GRAPH_MNIST_TASK'], int(index), environ['GRAPH_MNIST_NAME'],
                     environ['GRAPH_MNIST_SERVICE'], counts(environ['GRAPH_MNIST_TASKS']),
                     int(port))


def main():
    try:
        config = from_environment(os.environ)
    except PodError as e:
        sys.exit(f'E {e}')
    print(f'TF_CONFIG={json.dumps(config)}', file=sys.stderr, flush=True)
    os.environ['TF_CONFIG'] = json.dumps(config)
    os.execv(sys.executable, [sys.executable, '-m', 'graph_mnist.train', *sys.argv[1:]])


if __name__ == '__main__':
    main()
