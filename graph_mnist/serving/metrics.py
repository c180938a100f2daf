"""Prometheus metrics under TensorFlow Serving's names, summed over every serving
process (prometheus-client's multiprocess mode: each process writes its values to
files in one directory; the page adds them up), written as TensorFlow Serving writes
them (prometheus_exporter.cc: a counter keeps its name, no `_total`).

    :tensorflow:serving:request_count{model_name, status}          predict calls, by code
    :tensorflow:serving:request_latency{model_name, API, entrypoint}  successful ones, us
    :graph_mnist:serving:batch_size{model_name}                     examples per batch run
    :graph_mnist:serving:queue_depth{model_name, signature}         requests waiting

The directory must be named in PROMETHEUS_MULTIPROC_DIR before prometheus_client is
first imported: server.run does so before anything imports this module's users."""

import time

PATH = '/monitoring/prometheus/metrics'
LATENCY_BUCKETS = [10 * 1.8 ** i for i in range(33)]  # TF Serving's: 10 us x 1.8^i
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


class Metrics:
    """The serving process's metrics; cheap enough for every request (children cached)."""

    def __init__(self):
        from prometheus_client import Counter
        from prometheus_client import Gauge
        from prometheus_client import Histogram
        self.count = Counter(':tensorflow:serving:request_count',
                             'The total number of requests.', ['model_name', 'status'])
        self.latency = Histogram(':tensorflow:serving:request_latency',
                                 'Distribution of wall time (in microseconds) for '
                                 'Tensorflow Serving request.',
                                 ['model_name', 'API', 'entrypoint'], buckets=LATENCY_BUCKETS)
        self.batch = Histogram(':graph_mnist:serving:batch_size', 'Examples per batch run '
                               '(a Session call).', ['model_name'], buckets=BATCH_BUCKETS)
        self.queue = Gauge(':graph_mnist:serving:queue_depth', 'Requests waiting for a '
                           'batch, all processes together.', ['model_name', 'signature'],
                           multiprocess_mode='livesum')
        self.children = {}

    def child(self, metric, *labels):
        key = (id(metric), labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found

    def answered(self, model_name, api, entrypoint, code, started):
        """One predict call: its status code name ('OK', 'INVALID_ARGUMENT', ...), and
        its latency when it succeeded (as TensorFlow Serving records it)."""
        self.child(self.count, model_name, code).inc()
        if code == 'OK':
            self.child(self.latency, model_name, api, entrypoint).observe(
                (time.perf_counter() - started) * 1e6)

    def batched(self, model_name, signature, size, waiting):
        """A batch of `size` examples of a model's `signature` runs; `waiting` requests
        wait."""
        self.child(self.batch, model_name).observe(size)
        self.child(self.queue, model_name, signature).set(waiting)


def page(directory):
    """The metrics of every process, in Prometheus's text format, TF Serving's way."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.utils import floatToGoString
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    lines = []
    for family in sorted(registry.collect(), key=lambda f: f.name):
        lines.append(f'# HELP {family.name} {family.documentation}')
        lines.append(f'# TYPE {family.name} {family.type}')
        for sample in family.samples:
            name = sample.name
            if family.type == 'counter':
                if name.endswith('_created'):
                    continue
                name = family.name
            labels = ','.join(f'{k}="{escape(v)}"' for k, v in sample.labels.items())
            lines.append(f'{name}{{{labels}}} {floatToGoString(sample.value)}' if labels
                         else f'{name} {floatToGoString(sample.value)}')
    return '\n'.join(lines) + '\n'


def escape(value):
    return str(value).replace('\\', r'\\').replace('\n', r'\n').replace('"', r'\"')
