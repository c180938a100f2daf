"""The gRPC side of scripts/bench_serving.py (not run alone): h2load (C, nghttp2's
HTTP/2 load generator, a process of its own: apt-get install nghttp2-client) sending
TensorFlow Serving's PredictionService/Predict; the server's own request counts
(its Prometheus page) to tell gRPC failures, which HTTP/2 carries in trailers h2load
does not read; and the version swap under load, a Python gRPC client in a process of its
own recording which version answered each request."""

import asyncio
import bisect
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request

from graph_mnist.errors import UserError

PREDICT = '/tensorflow.serving.PredictionService/Predict'


def predict_request(images=None, pictures=None):
    """A serialized PredictRequest for serving_default (images) or from_image
    (pictures: encoded PNGs)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'mnist'
    if pictures is not None:
        request.model_spec.signature_name = 'from_image'
        request.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto(pictures))
    else:
        request.inputs['images'].CopyFrom(tf.make_tensor_proto(images))
    return request.SerializeToString()


def framed(message):
    """gRPC's framing of one message: not compressed, its length, the message."""
    return b'\0' + struct.pack('>I', len(message)) + message


def server_counts(url):
    """{status: count} of predict requests, summed over the server's processes."""
    with urllib.request.urlopen(url + '/monitoring/prometheus/metrics', timeout=30) as page:
        text = page.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith(':tensorflow:serving:request_count{'):
            labels, value = line.rsplit(' ', 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(value)
    return counts


def h2load(url, target, body, concurrency, requests, max_seconds):
    """`requests` gRPC Predict calls of `body` (one serialized PredictRequest),
    `concurrency` connections of one call each, after a warm-up of 5% not counted.
    Failures: h2load's own (connections, HTTP status) and the calls the server counted
    as not OK."""
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, 'body'), 'wb') as f:
            f.write(framed(body))
        log = os.path.join(work, 'log')

        def run(n, logged):
            command = ['h2load', '-n', str(n), '-c', str(concurrency), '-m', '1', '-t', '1',
                       '-d', os.path.join(work, 'body'), '-H', 'content-type: application/grpc',
                       '-H', 'te: trailers', f'http://{target}{PREDICT}']
            if logged:
                command.insert(1, f'--log-file={log}')
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=max_seconds + 60)
            if done.returncode != 0 or 'requests:' not in done.stdout:
                raise UserError(f'h2load failed: {done.stderr.strip() or done.stdout}')
            return done.stdout

        run(max(concurrency, requests // 20), False)
        before = server_counts(url)
        start = time.perf_counter()
        out = run(requests, True)
        seconds = time.perf_counter() - start
        after = server_counts(url)
        latencies = sorted(int(line.split('\t')[2]) for line in open(log) if line.strip())
    numbers = {}
    for line in out.splitlines():
        if line.startswith('requests:'):
            for part in line.split(':', 1)[1].split(','):
                value, name = part.split()[:2]
                numbers[name] = int(value)
        if line.startswith('finished in'):
            numbers['rate'] = float(line.split(',')[1].split()[0])
    ok = after.get('OK', 0) - before.get('OK', 0)
    not_ok = sum(after.values()) - sum(before.values()) - ok
    answered = numbers.get('succeeded', 0)
    errors = (numbers.get('failed', 0) + numbers.get('errored', 0) + numbers.get('timeout', 0)
              + int(not_ok) + max(0, requests - answered))
    def percentile(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] / 1000
    return {'requests': answered, 'seconds': seconds,
            'requests_per_second': numbers.get('rate', answered / seconds),
            'p50_ms': percentile(0.5), 'p99_ms': percentile(0.99),
            'max_ms': latencies[-1] / 1000, 'errors': errors, 'server_ok': int(ok)}


# ------------------------------------------------------------------ the swap under load

def swap(target, base, requests, concurrency, body):
    """(in its own process) Predict calls from `concurrency` clients, each on a
    connection of its own and each waiting for its answer before the next, until
    `requests` are answered and the new version has answered a tenth as many; after a
    tenth a new version is put in the base path as a careful copy does (written aside,
    then renamed). Returns a summary of the calls' (client, sent, answered, version,
    ok): failures, answers from an older version after a newer one."""
    import grpc
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    request = predict_pb2.PredictRequest.FromString(body)
    versions = sorted(int(v) for v in os.listdir(base) if v.isdigit())
    newer = versions[-1] + 1
    records, swapped = [], [None]

    def enough():
        """`requests` answered, and the new version among them (at least a tenth of
        them, or a minute after the swap: a version that never loads ends the run)."""
        if len(records) < requests:
            return False
        newest = sum(1 for r in records if r[3] == newer)
        return newest >= requests // 10 or time.perf_counter() - swapped[0] > 60

    async def client(index, stub):
        while not enough():
            sent = time.perf_counter()
            try:
                answer = await stub.Predict(request, timeout=30)
                records.append((index, sent, time.perf_counter(),
                                answer.model_spec.version.value, True))
            except grpc.RpcError:
                records.append((index, sent, time.perf_counter(), 0, False))
            if swapped[0] is None and len(records) >= requests // 10:
                swapped[0] = time.perf_counter()
                aside = os.path.join(base, f'.{newer}.partial')
                shutil.copytree(os.path.join(base, str(versions[-1])), aside)
                os.rename(aside, os.path.join(base, str(newer)))

    async def everyone():
        channels = [grpc.aio.insecure_channel(target, options=[
            ('grpc.use_local_subchannel_pool', 1)]) for _ in range(concurrency)]
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
        try:
            await asyncio.gather(*[client(i, s) for i, s in enumerate(stubs)])
        finally:
            for channel in channels:
                await channel.close()

    start = time.perf_counter()
    asyncio.run(everyone())
    seconds = time.perf_counter() - start
    failures = sum(1 for r in records if not r[4])
    by_client = {}
    for index, sent, answered, version, ok in sorted(records, key=lambda r: r[1]):
        if ok:
            by_client.setdefault(index, []).append(version)
    older_in_a_client = sum(1 for seen in by_client.values()
                            for a, b in zip(seen, seen[1:]) if b < a)
    # across clients: an answer from an older version to a request sent after an
    # answer from a newer one had arrived
    older_after_newer = 0
    done = sorted((r for r in records if r[4]), key=lambda r: r[2])
    answered_times = [r[2] for r in done]
    best_so_far, best = [], 0
    for r in done:
        best = max(best, r[3])
        best_so_far.append(best)
    for index, sent, answered, version, ok in records:
        if not ok:
            continue
        k = bisect.bisect_left(answered_times, sent)
        if k and best_so_far[k - 1] > version:
            older_after_newer += 1
    counts = {}
    for r in records:
        if r[4]:
            counts[r[3]] = counts.get(r[3], 0) + 1
    return {'requests': len(records), 'seconds': seconds,
            'requests_per_second': len(records) / seconds, 'failures': failures,
            'answers_by_version': {str(k): v for k, v in sorted(counts.items())},
            'older_after_newer_in_a_client': older_in_a_client,
            'older_after_newer_anywhere': older_after_newer,
            'new_version': newer}


def swap_main(target, base, requests, concurrency, body_path):
    with open(body_path, 'rb') as f:
        body = f.read()
    print(json.dumps(swap(target, base, requests, concurrency, body)))
