r"""A bounded load on graph_mnist.serve over loopback, beside the same model in process.

    python scripts/bench_serving.py --model_base_path=exported/conv_dropout
    python scripts/bench_serving.py --model_base_path=exported/conv_dropout \
        --requests=2000 --batch_requests=200 --concurrency=1,8,32 --json=runs/serving.json

In one run:
  1. in process (a process of its own): the newest version loaded in a
     tf.compat.v1.Session, as the server loads it, on batches of 100 MNIST test images:
     the images per second the server can approach (every request also costs HTTP, JSON
     and Python);
  2. the server (python -m graph_mnist.serve on a free port of 127.0.0.1, its defaults
     unless --server_flags), stopped at the end however the run ends;
  3. for every batch size (--batch_sizes, images per request) and concurrency, wrk (the
     load generator, a process of its own: apt-get install wrk) sends --requests
     requests (--batch_requests for batches above 1) of MNIST test images in turn, JSON
     row format, pixels with 4 decimals, after a warm-up of 5% not counted; each level
     lasts at most --max_seconds. Reported: requests and images per second, p50 and p99
     latency, errors (any answer that is not 200 with a digit, any socket error, any
     request not answered).

Goals (issue 13), printed as met or not: no error; at concurrency 32 with single images,
served images per second at least 10% of the in-process figure; p99 under 100 ms at
concurrency 8; p50 under 10 ms at concurrency 1. --json writes everything with the
machine and the commit (refuses an existing file).
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from absl import flags
import numpy as np

from graph_mnist.errors import UserError

FLAGS = flags.FLAGS
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bench_serving.lua')

GOALS = ('no errors', 'c=32 single images >= 10% of in-process',
         'p99 < 100 ms at c=8', 'p50 < 10 ms at c=1',
         'gRPC c=32 single images >= 1.0x REST', 'gRPC p50 < 1 ms at c=1',
         'swap under load: no failure, no older version after a newer')


def define_flags():
    flags.DEFINE_string('model_base_path', None, 'Exported versions (the newest is served).')
    flags.DEFINE_integer('requests', 2000, 'Requests per level, single images.', lower_bound=1)
    flags.DEFINE_integer('batch_requests', 200, 'Requests per level, batches above 1.',
                         lower_bound=1)
    flags.DEFINE_list('concurrency', ['1', '8', '32'], 'Requests in flight at once.')
    flags.DEFINE_list('batch_sizes', ['1', '100'], 'Images per request.')
    flags.DEFINE_integer('inprocess_batches', 1000, 'Batches of 100 timed in process, '
                         'three times (the best counts).',
                         lower_bound=1)
    flags.DEFINE_string('json', None, 'Write the results here (must not exist).')
    flags.DEFINE_string('data_dir', None, 'MNIST directory (default: the per-user cache).')
    flags.DEFINE_bool('grpc', True, "Also load the gRPC API (h2load: apt-get install "
                      'nghttp2-client), single images, at every concurrency.')
    flags.DEFINE_integer('from_image_requests', 500, 'Requests of the drawing page\'s kind '
                         '(a 280x280 PNG to from_image; REST, and gRPC unless --nogrpc) at '
                         'the highest concurrency (0: none).', lower_bound=0)
    flags.DEFINE_integer('swap_requests', 10000, 'gRPC requests while a new version is put '
                         'in a copy of the base path and served (0: no swap).', lower_bound=0)
    flags.DEFINE_enum('worker', None, ['inprocess', 'swap'], 'Internal: a part run in a '
                      'process of its own, answering JSON on stdout.')
    flags.DEFINE_string('target', None, 'Internal: the swap worker\'s gRPC address.')
    flags.DEFINE_string('body', None, 'Internal: the swap worker\'s request.')
    flags.DEFINE_integer('max_seconds', 300, 'Longest a load level may last.', lower_bound=1)
    flags.DEFINE_list('server_flags', [], 'More flags for graph_mnist.serve, e.g. '
                      '--server_flags=--rest_api_num_processes=1')
    flags.DEFINE_string('baseline', None, 'A commit: its server against this one, round '
                        'after round in turn (the levels only: no in-process figure, no '
                        'swap); each level\'s median ratio with its interval.')
    flags.DEFINE_integer('rounds', 5, 'Rounds of --baseline.', lower_bound=1)


def test_images():
    from graph_mnist import data
    mnist = data.load(FLAGS.data_dir, log=lambda message: None)
    return mnist.test_images, mnist.test_digits


# ----------------------------------------------------------------------------- workers

def inprocess():
    """Images per second of the SavedModel in a Session, batches of 100."""
    import tensorflow as tf

    from graph_mnist import export
    images, _ = test_images()
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(
            session, ['serve'], export.resolve(FLAGS.model_base_path))
    signature = meta.signature_def['serving_default']
    run = session.make_callable([graph.get_tensor_by_name(signature.outputs['digit'].name)],
                                feed_list=[graph.get_tensor_by_name(
                                    signature.inputs['images'].name)])
    batches = [images[i:i + 100] for i in range(0, len(images), 100)]
    for batch in batches[:10]:
        run(batch)
    rates = []
    for _ in range(3):  # the best of three: the limit, not a bad moment of the machine
        start = time.perf_counter()
        for i in range(FLAGS.inprocess_batches):
            run(batches[i % len(batches)])
        rates.append(FLAGS.inprocess_batches * 100 / (time.perf_counter() - start))
    return {'images_per_second': max(rates), 'each': rates, 'batch': 100,
            'batches': FLAGS.inprocess_batches}


def json_bodies(batch):
    """Request bodies of `batch` MNIST test images, JSON row format, 4 decimals."""
    images, _ = test_images()
    count = min(len(images) // batch, 2000 // batch)
    return [json.dumps({'instances': np.round(images[i * batch:(i + 1) * batch], 4).tolist()})
            for i in range(count)]


def pictures(count=200):
    """MNIST test digits as the drawing page sends them: black ink on white, 280x280
    PNG (the canvas), encoded."""
    import io

    from PIL import Image
    images, _ = test_images()
    encoded = []
    for image in images[:count]:
        ink = Image.fromarray((255 - image[:, :, 0] * 255).astype(np.uint8))
        png = io.BytesIO()
        ink.resize((280, 280), Image.BILINEAR).save(png, 'PNG')
        encoded.append(png.getvalue())
    return encoded


def picture_bodies():
    import base64
    return [json.dumps({'signature_name': 'from_image', 'instances': [
        {'b64': base64.b64encode(png).decode()}]}) for png in pictures()]


def load(url, concurrency, batch, requests, bodies_of=json_bodies):
    """`requests` POSTs of `batch` images, `concurrency` at a time, sent by wrk (C, one
    thread, keep-alive connections) with bench_serving.lua, after a warm-up of 5% not
    counted. A Python client spent as much CPU per request as the server it measured,
    on the same two cores (BUILD_NOTES.md)."""
    import tempfile
    with tempfile.NamedTemporaryFile('w', suffix='.jsonl') as bodies:
        for body in bodies_of(batch) if bodies_of is json_bodies else bodies_of():
            bodies.write(body + '\n')
        bodies.flush()

        def wrk(limit):
            command = ['wrk', '-t1', f'-c{concurrency}', f'-d{FLAGS.max_seconds}s',
                       '-s', LUA, f'{url}/v1/models/mnist:predict', '--', bodies.name,
                       str(limit)]
            process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            try:
                lines = []
                for line in process.stdout:  # LIMIT: all answered; end it as Ctrl-C would
                    lines.append(line)
                    if line.strip() == 'LIMIT':
                        process.send_signal(signal.SIGINT)
                process.wait(FLAGS.max_seconds + 60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            answer = [line for line in lines if line.startswith('{')]
            if not answer:
                raise UserError(f'wrk failed: {process.stderr.read().strip() or lines}')
            return json.loads(answer[-1])
        wrk(max(concurrency, requests // 20))
        x = wrk(requests)
    errors = x['refused'] + x['socket_errors'] + max(0, requests - x['answered'])
    return {'api': 'REST', 'signature': 'serving_default' if bodies_of is json_bodies else
            'from_image', 'batch': batch, 'concurrency': concurrency,
            'requests': x['answered'],
            'seconds': x['seconds'], 'requests_per_second': x['answered'] / x['seconds'],
            'images_per_second': x['answered'] * batch / x['seconds'],
            'p50_ms': x['p50_us'] / 1000, 'p99_ms': x['p99_us'] / 1000,
            'max_ms': x['max_us'] / 1000, 'errors': errors}


# ----------------------------------------------------------------------------- the run

def worker(*flags_):
    """Runs this script as a worker in a fresh process; its JSON answer."""
    command = [sys.executable, os.path.abspath(__file__), *flags_]
    if FLAGS.data_dir:
        command.append(f'--data_dir={FLAGS.data_dir}')
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise UserError(f'the {flags_[0]} worker failed:\n' + done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def goals(levels, inprocess_rate, swapped):
    def level(batch, concurrency, api='REST'):
        return next((x for x in levels if x['batch'] == batch and x['api'] == api and
                     x['signature'] == 'serving_default' and
                     x['concurrency'] == concurrency), None)
    single32, at8, at1 = level(1, 32), level(1, 8), level(1, 1)
    grpc32, grpc1 = level(1, 32, 'gRPC'), level(1, 1, 'gRPC')
    return {
        GOALS[0]: all(x['errors'] == 0 for x in levels),
        GOALS[1]: None if not single32 else
        single32['images_per_second'] >= 0.10 * inprocess_rate,
        GOALS[2]: None if not at8 else at8['p99_ms'] < 100,
        GOALS[3]: None if not at1 else at1['p50_ms'] < 10,
        GOALS[4]: None if not (grpc32 and single32) else
        grpc32['requests_per_second'] >= single32['requests_per_second'],
        GOALS[5]: None if not grpc1 else grpc1['p50_ms'] < 1,
        GOALS[6]: None if not swapped else (
            swapped['failures'] == 0 and swapped['older_after_newer_anywhere'] == 0 and
            swapped['older_after_newer_in_a_client'] == 0 and
            len(swapped['answers_by_version']) == 2),
    }


def swap_run(image):
    """The version swap under load: a server of its own on a copy of the newest version
    (the user's base path is not written to), the load in a process of its own."""
    import tempfile

    import bench_serving_grpc
    import server_process

    from graph_mnist import export
    with tempfile.TemporaryDirectory() as work:
        base = os.path.join(work, 'base')
        shutil.copytree(export.resolve(FLAGS.model_base_path), os.path.join(base, '1'))
        body = os.path.join(work, 'request')
        with open(body, 'wb') as f:
            f.write(bench_serving_grpc.predict_request(images=image))
        with server_process.Subprocess(base, '--file_system_poll_wait_seconds=0.2',
                                       *FLAGS.server_flags) as server:
            swapped = worker('--worker=swap', f'--target={server.grpc_target}',
                             f'--model_base_path={base}', f'--body={body}',
                             f'--swap_requests={FLAGS.swap_requests}',
                             f'--concurrency={max(int(c) for c in FLAGS.concurrency)}')
    return swapped


def levels_of(server, concurrencies, batches, images, shown=lambda level: None):
    """Every level against one running server: REST at each batch size and concurrency,
    gRPC beside REST's single images at once after; shown(level) after each."""
    import bench_serving_grpc
    found = []
    for batch in batches:
        for concurrency in concurrencies:
            requests = FLAGS.requests if batch == 1 else FLAGS.batch_requests
            x = load(server.url, concurrency, batch, requests)
            x['images_per_second'] = x['requests_per_second'] * batch
            found.append(x)
            shown(x)
            if FLAGS.grpc and batch == 1:
                body = bench_serving_grpc.predict_request(images=images[:1])
                y = bench_serving_grpc.h2load(server.url, server.grpc_target, body,
                                              concurrency, requests, FLAGS.max_seconds)
                y.update(api='gRPC', signature='serving_default', batch=1,
                         concurrency=concurrency, images_per_second=y['requests_per_second'])
                found.append(y)
                shown(y)
    return found


def compare(concurrencies, batches, images):
    """This server against --baseline's (a git worktree of that commit), each round
    both in turn (the first alternating), on the same levels: {level: figures}."""
    import tempfile

    import bench_report
    import server_process
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {'this': [], 'baseline': []}
    with tempfile.TemporaryDirectory() as tmp:
        checkout = os.path.join(tmp, 'baseline')
        made = subprocess.run(['git', '-C', here, 'worktree', 'add', '--detach', checkout,
                               FLAGS.baseline], capture_output=True, text=True)
        if made.returncode != 0:
            raise UserError(f'--baseline={FLAGS.baseline}: {made.stderr.strip()}')
        try:
            for r in range(FLAGS.rounds):
                for side in (('this', 'baseline') if r % 2 == 0 else ('baseline', 'this')):
                    root = here if side == 'this' else checkout
                    with server_process.Subprocess(FLAGS.model_base_path, *FLAGS.server_flags,
                                                   env={'PYTHONPATH': root}) as server:
                        runs[side].append(levels_of(server, concurrencies, batches, images))
                    print(f'round {r + 1}, {side}: ' + ', '.join(
                        f'{x["api"]} {x["batch"]}x{x["concurrency"]} '
                        f'{x["requests_per_second"]:,.0f}/s' for x in runs[side][-1]))
        finally:
            subprocess.run(['git', '-C', here, 'worktree', 'remove', '--force', checkout],
                           capture_output=True)
    compared = []
    for i, level in enumerate(runs['this'][0]):
        ours = [run[i] for run in runs['this']]
        theirs = [run[i] for run in runs['baseline']]
        ratios = [a['requests_per_second'] / b['requests_per_second']
                  for a, b in zip(ours, theirs)]
        low, high, coverage = bench_report.median_interval(ratios)
        compared.append({key: level[key] for key in ('api', 'batch', 'concurrency')} | {
            'this_rps': [x['requests_per_second'] for x in ours],
            'baseline_rps': [x['requests_per_second'] for x in theirs],
            'this_p50_ms': [x['p50_ms'] for x in ours],
            'baseline_p50_ms': [x['p50_ms'] for x in theirs],
            'errors': sum(x['errors'] for x in ours + theirs),
            'ratio_median': float(np.median(ratios)), 'ratio_low': low, 'ratio_high': high,
            'coverage': coverage, 'ratios': ratios})
    print(f'{"api":>5} {"images":>6} {"conc.":>5} {"this req/s":>10} {"base req/s":>10} '
          f'{"this p50":>8} {"base p50":>8} {"this/base [interval]":>24} {"errors":>6}')
    for x in compared:
        print(f'{x["api"]:>5} {x["batch"]:>6} {x["concurrency"]:>5} '
              f'{np.median(x["this_rps"]):>10,.0f} {np.median(x["baseline_rps"]):>10,.0f} '
              f'{np.median(x["this_p50_ms"]):>8.2f} {np.median(x["baseline_p50_ms"]):>8.2f} '
              f'{x["ratio_median"]:>8.2f} [{x["ratio_low"]:.2f}, {x["ratio_high"]:.2f}] '
              f'{x["coverage"]:.0%} {x["errors"]:>6}')
    return compared


def show(x):
    print(f'{x["api"]:>5} {x["signature"]:>15} {x["batch"]:>6} {x["concurrency"]:>11} '
          f'{x["requests"]:>8} {x["requests_per_second"]:>8,.0f} '
          f'{x["requests_per_second"] * x["batch"]:>9,.0f} {x["p50_ms"]:>7.2f} '
          f'{x["p99_ms"]:>7.2f} {x["errors"]:>6}')


def main(argv):
    del argv
    if FLAGS.worker == 'inprocess':
        print(json.dumps(inprocess()))
        return 0
    if FLAGS.worker == 'swap':
        import bench_serving_grpc
        bench_serving_grpc.swap_main(FLAGS.target, FLAGS.model_base_path, FLAGS.swap_requests,
                                     int(FLAGS.concurrency[0]), FLAGS.body)
        return 0
    import server_process

    from graph_mnist import export
    from graph_mnist.machine import machine
    if FLAGS.model_base_path is None:
        raise UserError('--model_base_path is required')
    if shutil.which('wrk') is None:
        raise UserError('wrk is missing (the load generator): apt-get install wrk, or '
                        'sh scripts/install_test_packages.sh')
    if FLAGS.grpc and shutil.which('h2load') is None:
        raise UserError('h2load is missing (the gRPC load generator): apt-get install '
                        'nghttp2-client, or sh scripts/install_test_packages.sh; or --nogrpc')
    if FLAGS.json and os.path.exists(FLAGS.json):
        raise UserError(f'{FLAGS.json} exists; choose another --json')
    version = export.resolve(FLAGS.model_base_path)
    try:
        concurrencies = [int(c) for c in FLAGS.concurrency]
        batches = [int(b) for b in FLAGS.batch_sizes]
    except ValueError:
        raise UserError('--concurrency and --batch_sizes are lists of whole numbers') from None
    if FLAGS.baseline:
        images, _ = test_images()
        compared = compare(concurrencies, batches, images)
        if FLAGS.json:
            os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
            with open(FLAGS.json, 'x') as f:
                json.dump({'command': ' '.join(['python', 'scripts/bench_serving.py'] +
                                               sys.argv[1:]),
                           'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                           'machine': machine(), 'version_dir': version,
                           'baseline': FLAGS.baseline, 'rounds': FLAGS.rounds,
                           'compared': compared}, f, indent=1)
            print(f'written: {FLAGS.json}')
        return 0
    base = [f'--model_base_path={FLAGS.model_base_path}']
    limit = worker('--worker=inprocess', *base,
                   f'--inprocess_batches={FLAGS.inprocess_batches}')
    print(f'in process ({version}, batches of 100): {limit["images_per_second"]:,.0f} images/s')
    import bench_serving_grpc
    images, _ = test_images()
    with server_process.Subprocess(FLAGS.model_base_path, *FLAGS.server_flags) as server:
        print(f'{"api":>5} {"signature":>15} {"images":>6} {"concurrency":>11} '
              f'{"requests":>8} {"req/s":>8} {"images/s":>9} {"p50 ms":>7} {"p99 ms":>7} '
              f'{"errors":>6}')
        levels = levels_of(server, concurrencies, batches, images, show)
        if FLAGS.from_image_requests:
            x = load(server.url, max(concurrencies), 1, FLAGS.from_image_requests,
                     bodies_of=picture_bodies)
            x['images_per_second'] = x['requests_per_second']
            levels.append(x)
            show(x)
            if FLAGS.grpc:  # the same pictures' first, as a string tensor over gRPC
                body = bench_serving_grpc.predict_request(pictures=pictures(1))
                y = bench_serving_grpc.h2load(server.url, server.grpc_target, body,
                                              max(concurrencies), FLAGS.from_image_requests,
                                              FLAGS.max_seconds)
                y.update(api='gRPC', signature='from_image', batch=1,
                         concurrency=max(concurrencies),
                         images_per_second=y['requests_per_second'])
                levels.append(y)
                show(y)
    swapped = None
    if FLAGS.grpc and FLAGS.swap_requests:
        swapped = swap_run(images[:1])
        print(f'version swap under load (gRPC, {max(concurrencies)} clients): '
              f'{swapped["requests"]:,} requests, answers by version '
              f'{swapped["answers_by_version"]}, {swapped["failures"]} failed, '
              f'{swapped["older_after_newer_in_a_client"]} older after newer in a client, '
              f'{swapped["older_after_newer_anywhere"]} anywhere')
    met = goals(levels, limit['images_per_second'], swapped)
    single32 = next((x for x in levels if x['batch'] == 1 and x['concurrency'] == 32 and
                     x['api'] == 'REST' and x['signature'] == 'serving_default'), None)
    grpc32 = next((x for x in levels if x['api'] == 'gRPC' and x['concurrency'] == 32), None)
    if single32:
        print(f'served single images at concurrency 32: '
              f'{single32["images_per_second"] / limit["images_per_second"]:.1%} of in process')
    if single32 and grpc32:
        print(f'gRPC / REST requests per second at concurrency 32: '
              f'{grpc32["requests_per_second"] / single32["requests_per_second"]:.2f}x')
    for goal, ok in met.items():
        print(f'  {"met" if ok else "not measured" if ok is None else "NOT MET"}: {goal}')
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, 'x') as f:
            json.dump({'command': ' '.join(['python', 'scripts/bench_serving.py'] + sys.argv[1:]),
                       'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'machine': machine(),
                       'version_dir': version, 'inprocess': limit, 'levels': levels,
                       'swap': swapped, 'goals': met}, f, indent=1)
        print(f'written: {FLAGS.json}')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
