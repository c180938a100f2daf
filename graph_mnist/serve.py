r"""Serves exported networks with TensorFlow Serving's REST and gRPC APIs, and a page to
draw on.

    graph-mnist-serve --model_base_path=exported/conv_dropout
    # then open http://127.0.0.1:8501/ and draw a digit, or:
    curl -d '{"signature_name": "from_image",
              "instances": [{"b64": "'$(base64 -w0 digit.png)'"}]}' \
        http://127.0.0.1:8501/v1/models/mnist:predict
    # or call 127.0.0.1:8500 with tensorflow-serving-api's PredictionService stub

The APIs, the flags and the environment are TensorFlow Serving's (its paths, JSON,
status codes, gRPC services and messages; --port, --rest_api_port, --model_name,
--model_base_path or MODEL_NAME and MODEL_BASE_PATH, its configuration files), so a
client or a command line written for TensorFlow Serving works here unchanged, and the
same SavedModel runs unchanged in a real TensorFlow Serving:

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]           status of the versions
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata  the signatures
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict   a prediction:
             {"instances": [...]} -> {"predictions": ...}, {"inputs": ...} -> {"outputs": ...}
    gRPC PredictionService.Predict, .GetModelMetadata; ModelService.GetModelStatus
    GET  /monitoring/prometheus/metrics                         the metrics, all processes summed
    GET  /                                                      the drawing page

Versions: --model_base_path holds numbered SavedModel directories (graph_mnist.export
writes the next one each time). The newest is served (or, with --model_config_file,
several models, each by its version policy, with its version labels: GET and POST
/v1/models/{name}/labels/{label}...); the base paths are polled every
--file_system_poll_wait_seconds (and the config file every
--model_config_file_poll_wait_seconds); a new version is loaded beside the old one by
every process, then all switch at once; the old one finishes what it was given before
it is closed. No request fails in between, and none is answered by an older version
after a newer one.

Batching: one batch at a time per signature; the requests that arrive while it runs go
next, together, in one Session call (up to --max_batch_size images). A lone request never
waits; a crowd is batched (--batch_timeout_micros adds a wait for company).

Processes: one per usable core (--rest_api_num_processes), each with the model loaded,
all on the same ports (SO_REUSEPORT); the first checks the flags and that the ports are
free, binds, starts the others, decides the versions for all and announces the address
once all are ready; they end with it.

Bad input gets TensorFlow Serving's status code and {"error": "..."} (gRPC: its code and
message); the server goes on. It listens on 127.0.0.1 unless --host says otherwise.
Built on Starlette and uvicorn, and grpcio (the `serve` extra: pip install -e '.[serve]').

This module is the command line only; the server is graph_mnist.serving, in the parts
TensorFlow Serving has (its package docstring lists them). docs/serving.md has the
flags beside TensorFlow Serving's.

`graph-mnist-serve` is `python -m graph_mnist.serve`: the same program.
"""


if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os
import sys

from absl import app
from absl import flags
from absl import logging

from graph_mnist.serving import config
from graph_mnist.serving import metrics
from graph_mnist.serving import server

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('model_base_path', None, 'The model base path: numbered SavedModel '
                        'versions, as graph_mnist.export writes them (default, as in '
                        "TensorFlow Serving's Docker image: $MODEL_BASE_PATH/$MODEL_NAME "
                        'when MODEL_BASE_PATH is set).')
    flags.DEFINE_string('model_name', None, 'The name in /v1/models/{name} (default: '
                        '$MODEL_NAME, else mnist).')
    flags.DEFINE_integer('port', 8500, 'The gRPC port (0: no gRPC API).',
                         lower_bound=0, upper_bound=65535)
    flags.DEFINE_integer('rest_api_port', 8501, 'The HTTP port of the REST API and the '
                         'drawing page (0: no REST API).', lower_bound=0, upper_bound=65535)
    flags.DEFINE_string('host', '127.0.0.1', 'The address to listen on; 0.0.0.0 opens the '
                        'server to the network.')
    flags.DEFINE_float('file_system_poll_wait_seconds', 1.0, 'How often the base path is '
                       'looked at for new versions (0: once, at the start).', lower_bound=0)
    flags.DEFINE_string('model_config_file', None, "TensorFlow Serving's model config "
                        '(text format): the models of its model_config_list, each with its '
                        'name, base_path, model_version_policy and version_labels (instead '
                        'of --model_name and --model_base_path).')
    flags.DEFINE_integer('model_config_file_poll_wait_seconds', 0, 'How often the model '
                         'config file is read again: models added are served, models '
                         'removed unloaded, labels moved (0: read once).', lower_bound=0)
    flags.DEFINE_bool('allow_version_labels_for_unavailable_models', False, 'A new version '
                      'label may point at a version not yet available (a label already '
                      'assigned moves only to an available one).')
    flags.DEFINE_float('load_timeout_seconds', 600, 'A version not loaded in this time is '
                       'abandoned and tried again (a load that hangs holds nothing back); '
                       'ours, not TensorFlow Serving\'s.', lower_bound=0.001)
    flags.DEFINE_bool('enable_batching', True, 'Run the requests that arrive together in '
                      'one Session call (on by default here, off in TensorFlow Serving: a '
                      'lone request never waits for company unless --batch_timeout_micros '
                      'says so; --noenable_batching runs every request alone).')
    flags.DEFINE_string('batching_parameters_file', None, "TensorFlow Serving's batching "
                        'parameters (text format): max_batch_size, batch_timeout_micros, '
                        'max_enqueued_batches, num_batch_threads (batches run at once per '
                        'signature and process), thread_pool_name.')
    flags.DEFINE_integer('max_batch_size', 64, 'Most examples run in one Session call '
                         '(the batching parameters file may set it instead).', lower_bound=1)
    flags.DEFINE_integer('batch_timeout_micros', 0, 'How long a batch smaller than '
                         '--max_batch_size waits for more requests (0: it goes as soon as '
                         'the previous batch is done).', lower_bound=0)
    flags.DEFINE_integer('max_enqueued_batches', server.Options.max_enqueued_batches,
                         'Most batches waiting per signature and process; a request beyond '
                         'is answered 503 at once.', lower_bound=1)
    flags.DEFINE_integer('rest_api_timeout_in_ms', int(server.Options.timeout_seconds * 1000),
                         'A predict not answered in this time gets 504 (0: no limit).',
                         lower_bound=0)
    flags.DEFINE_bool('rest_api_enable_cors_support', False, "Add TensorFlow Serving's "
                      'CORS headers (any origin may call the REST API from a browser).')
    flags.DEFINE_integer('rest_api_num_threads', None, "TensorFlow Serving's HTTP threads: "
                         'accepted for its command lines; here processes answer requests '
                         '(--rest_api_num_processes).', lower_bound=1)
    flags.DEFINE_string('monitoring_config_file', None, "TensorFlow Serving's monitoring "
                        'config (text format): prometheus_config { enable, path }. Without '
                        'it the Prometheus page is at /monitoring/prometheus/metrics.')
    flags.DEFINE_bool('enable_model_warmup', True, "Replay the version's warm-up requests "
                      '(assets.extra/tf_serving_warmup_requests) before it serves.')
    flags.DEFINE_integer('max_body_bytes', server.Options.max_body_bytes,
                         'Larger request bodies get 413.', lower_bound=1024)
    flags.DEFINE_integer('rest_api_num_processes', 0, 'Processes answering requests, each '
                         'with the model loaded, all on the one port (0: one per core this '
                         'process may use, fewer where a CPU quota is set). '
                         'Python runs one thread at a time per process; TensorFlow Serving '
                         'uses threads for the same.', lower_bound=0)
    flags.DEFINE_integer('tensorflow_intra_op_parallelism', 0, 'Threads of one operation '
                         '(0: the cores shared among the processes, at least 1).',
                         lower_bound=0)
    flags.DEFINE_integer('tensorflow_inter_op_parallelism', 0, 'Operations run at once '
                         '(0: as --tensorflow_intra_op_parallelism).', lower_bound=0)
    flags.DEFINE_integer('max_num_load_retries', 5, 'How many times a version that fails to '
                         'load is tried again (a version copied without care can be '
                         'incomplete at first).', lower_bound=0)
    flags.DEFINE_integer('load_retry_interval_micros', 60 * 1000 * 1000, 'The wait before '
                         'each new try.', lower_bound=0)
    flags.DEFINE_string('board', None, 'Internal: the first process\'s board, where it '
                        'says which version every process serves.')
    flags.DEFINE_integer('process_index', 0, 'Internal: one of the processes the first '
                         'one started (1, 2, ...), on its ports.', lower_bound=0)
    flags.DEFINE_integer('ready_fd', None, 'Internal: where another process says it is '
                         'ready.')


def model_name_and_base_path(environ=os.environ):
    """(--model_name, --model_base_path), filled in as TensorFlow Serving's Docker image
    fills them from MODEL_NAME and MODEL_BASE_PATH."""
    name = FLAGS.model_name or environ.get('MODEL_NAME') or 'mnist'
    base = FLAGS.model_base_path
    if base is None and environ.get('MODEL_BASE_PATH'):
        base = os.path.join(environ['MODEL_BASE_PATH'], name)
    if base is None:
        raise app.UsageError('give --model_base_path (or set MODEL_BASE_PATH, as for '
                             "TensorFlow Serving's Docker image)")
    return name, base


def batching():
    """{max_batch_size, batch_timeout_seconds, max_enqueued_batches, batch_threads,
    thread_pool_name} (server.Options' names) from the flags and the batching
    parameters file; a value set in both is refused."""
    found = {}
    if FLAGS.batching_parameters_file:
        if not FLAGS.enable_batching:
            raise app.UsageError('--batching_parameters_file needs --enable_batching')
        found = config.batching_parameters(FLAGS.batching_parameters_file)
        for name in ('max_batch_size', 'batch_timeout_micros', 'max_enqueued_batches'):
            if name in found and FLAGS[name].present:
                raise app.UsageError(f'{name} is set both by --{name} and by '
                                     f'--batching_parameters_file: give it once')
    size = found.get('max_batch_size', FLAGS.max_batch_size) if FLAGS.enable_batching else 1
    timeout = found.get('batch_timeout_micros', FLAGS.batch_timeout_micros)
    return {'max_batch_size': size, 'batch_timeout_seconds': timeout / 1e6,
            'max_enqueued_batches': found.get('max_enqueued_batches',
                                              FLAGS.max_enqueued_batches),
            'batch_threads': found.get('num_batch_threads', 1),
            'thread_pool_name': found.get('thread_pool_name')}


def models():
    """[config.Model]: --model_config_file's, or the one --model_name and
    --model_base_path name (TF Serving's default policy: the latest version)."""
    if FLAGS.model_config_file:
        if FLAGS.model_base_path or FLAGS.model_name:
            raise app.UsageError('--model_config_file names the models: leave out '
                                 '--model_name and --model_base_path')
        return config.model_config(FLAGS.model_config_file)
    if FLAGS.model_config_file_poll_wait_seconds:
        raise app.UsageError('--model_config_file_poll_wait_seconds needs '
                             '--model_config_file')
    return [config.Model(*model_name_and_base_path())]


def main(argv):
    del argv
    if not (FLAGS.port or FLAGS.rest_api_port):
        raise app.UsageError('--port=0 and --rest_api_port=0: nothing to serve')
    served = models()
    metrics_path = (config.monitoring(FLAGS.monitoring_config_file)
                    if FLAGS.monitoring_config_file else metrics.PATH)
    if FLAGS.rest_api_num_threads and not FLAGS.process_index:
        logging.info('--rest_api_num_threads: TensorFlow Serving\'s HTTP threads; here '
                     'processes answer requests (--rest_api_num_processes)')
    return server.run(server.Options(
        **batching(),
        models=tuple(served), config_file=FLAGS.model_config_file,
        config_poll_seconds=FLAGS.model_config_file_poll_wait_seconds,
        labels_for_unavailable=FLAGS.allow_version_labels_for_unavailable_models,
        load_seconds=FLAGS.load_timeout_seconds, grpc_port=FLAGS.port,
        host=FLAGS.host, port=FLAGS.rest_api_port,
        poll_seconds=FLAGS.file_system_poll_wait_seconds,
        timeout_seconds=FLAGS.rest_api_timeout_in_ms / 1000 or None,
        cors=FLAGS.rest_api_enable_cors_support, metrics_path=metrics_path,
        warm_up=FLAGS.enable_model_warmup,
        max_body_bytes=FLAGS.max_body_bytes, processes=FLAGS.rest_api_num_processes,
        intra_op_threads=FLAGS.tensorflow_intra_op_parallelism,
        inter_op_threads=FLAGS.tensorflow_inter_op_parallelism,
        max_load_retries=FLAGS.max_num_load_retries,
        load_retry_seconds=FLAGS.load_retry_interval_micros / 1e6,
        board=FLAGS.board, process_index=FLAGS.process_index, ready_fd=FLAGS.ready_fd),
        sys.argv)


if __name__ == '__main__':
    cli.run(main, define_flags)
