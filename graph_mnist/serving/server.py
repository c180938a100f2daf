"""The server's process main: the first process (it checks, binds, decides the versions
and starts the others) and the others (on the same ports, SO_REUSEPORT), each serving
the REST API through uvicorn and the gRPC API through grpcio over one request
processor (core.py)."""

import asyncio
import dataclasses
import functools
import gc
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl import logging

from graph_mnist import export
from graph_mnist import exposure
from graph_mnist import machine
from graph_mnist.errors import UserError
from graph_mnist.serving.board import Board
from graph_mnist.serving.core import Core
from graph_mnist.serving.decide import Decider
from graph_mnist.serving.metrics import PATH as metrics_page_path
from graph_mnist.serving.rest import Http
from graph_mnist.serving.rest import make_app
from graph_mnist.serving.servable import Servable
from graph_mnist.serving.servable import Settings
from graph_mnist.serving.versions import Versions


@dataclasses.dataclass(frozen=True)
class Options:
    """What graph_mnist.serve's flags say (their names there in brackets)."""
    models: tuple                 # config.Model: --model_name and --model_base_path,
    #                               or every model of --model_config_file
    config_file: str = None       # --model_config_file, read again every
    config_poll_seconds: float = 0.0  # --model_config_file_poll_wait_seconds (0: never)
    labels_for_unavailable: bool = False  # --allow_version_labels_for_unavailable_models
    host: str = '127.0.0.1'       # --host
    port: int = 8501              # --rest_api_port (0: no REST API)
    grpc_port: int = 8500         # --port (0: no gRPC API)
    poll_seconds: float = 1.0     # --file_system_poll_wait_seconds
    max_batch_size: int = 64      # --max_batch_size
    batch_timeout_seconds: float = 0.0  # --batch_timeout_micros / 1e6
    max_body_bytes: int = Http.max_body_bytes  # --max_body_bytes
    processes: int = 0            # --rest_api_num_processes (0: one per core)
    intra_op_threads: int = 0     # --tensorflow_intra_op_parallelism
    inter_op_threads: int = 0     # --tensorflow_inter_op_parallelism
    max_enqueued_batches: int = Settings.max_enqueued_batches  # or the batching file
    batch_threads: int = 1        # the batching file's num_batch_threads
    thread_pool_name: str = None  # the batching file's thread_pool_name
    timeout_seconds: float = 30.0  # --rest_api_timeout_in_ms / 1e3
    cors: bool = False            # --rest_api_enable_cors_support
    metrics_path: str = metrics_page_path  # --monitoring_config_file (None: no page)
    warm_up: bool = True          # --enable_model_warmup
    max_load_retries: int = 5     # --max_num_load_retries
    load_retry_seconds: float = 60.0  # --load_retry_interval_micros / 1e6
    load_seconds: float = 600.0   # --load_timeout_seconds
    board: str = None             # --board (internal: the first process's board)
    process_index: int = 0        # --process_index (internal: 0 is the first process)
    ready_fd: int = None          # --ready_fd (internal)


def claim(host, port):
    """Fails with one clear line when anything already listens on, or holds, host:port:
    binding with SO_REUSEPORT alone would let a second instance of this server (same
    user) share the port silently and take part of the traffic."""
    if port == 0:
        return
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f'cannot listen on {host}:{port}: {e.strerror or e} (is another '
                            f'server running there?)') from None


def listen(host, port, backlog=1024):
    """A bound, listening socket (backlog None: bound only, a reservation), or one clear
    error. SO_REUSEPORT: the other serving processes (same user) listen on the same port,
    and the kernel spreads connections among them evenly (one shared socket let one
    process take most of them)."""
    try:
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if backlog is not None:
            sock.listen(backlog)
    except OSError as e:
        raise UserError(f'cannot listen on {host}:{port}: {e.strerror or e}') from None
    return sock


def address(host, port):
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


class Others:
    """The other serving processes: this command (`argv`, its flags) again, on the same
    ports, each writing a byte to a pipe once its versions are loaded and it listens.
    One that stops following the decisions (alive, but stuck) is killed and started
    again: it would hold back every later version, as each must be held by all."""

    def __init__(self, argv, board):
        self.board = board
        self.command = [sys.executable, '-m', 'graph_mnist.serve', *argv[1:],
                        f'--board={board.path}']
        self.processes = {}  # index: Popen
        self.pipes = []      # read ends of the restarted ones' pipes, closed at the end

    def start(self, index, ready):
        self.processes[index] = subprocess.Popen(
            [*self.command, f'--ready_fd={ready}', f'--process_index={index}'],
            pass_fds=[ready])

    def running(self):
        """The first process and the others still running: those whose holdings count."""
        return [0] + [i for i, p in sorted(self.processes.items()) if p.poll() is None]

    def restart(self, index):
        self.processes[index].kill()
        self.processes[index].wait()
        self.board.forget(index)
        ready, told = os.pipe()
        self.pipes.append(ready)
        self.start(index, told)
        os.close(told)

    def watch(self, decider, seconds, stopping):
        """Restarts a process that has not followed the decisions for `seconds`, until
        `stopping` is set (a thread's loop)."""
        while not stopping.wait(1):
            now = time.monotonic()
            for index, since in list(decider.behind.items()):
                if index in self.processes and now - since > seconds:
                    logging.error('serving process %d has not followed the decisions for '
                                  '%.0f s: restarting it', index, now - since)
                    decider.behind.pop(index, None)
                    self.restart(index)

    def stop(self):
        stop_others(list(self.processes.values()))
        for ready in self.pipes:
            os.close(ready)


def wait_for(others, ready, timeout=600):
    """Until every other process is ready (or has ended: it said why on stderr). A
    process still loading takes no connection: a client's keep-alive connections all
    went to the first one when it announced itself before the others were ready."""
    waiting, deadline = len(others), time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        if select.select([ready], [], [], 0.5)[0]:
            got = os.read(ready, waiting)
            if not got:  # every writer gone
                break
            waiting -= len(got)
        elif all(p.poll() is not None for p in others):
            break
    os.close(ready)
    if waiting:
        logging.warning('%d of the %d other serving processes did not start', waiting,
                        len(others))


def stop_others(others):
    for process in others:
        if process.poll() is None:
            process.terminate()
    for process in others:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def end_with(parent):
    """In a process the first one started: stop serving when the first one is gone."""

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name='parent-watch', daemon=True).start()


def threads(options):
    """TensorFlow's threads per process. Its pools spin while they wait for work: with
    one pool per core in each of several processes, they took the cores from each other
    (2 processes on 2 cores: 6,126 single-image requests/s with 2 threads each, 6,669
    with 1, and p50 at concurrency 1 711 us against 489; BUILD_NOTES.md)."""
    processes = options.processes or machine.usable_cores()
    intra = options.intra_op_threads or max(1, machine.usable_cores() // processes)
    return intra, options.inter_op_threads or intra


async def serve(options, versions, core, rest_socket, grpc_reserved, ready, stop):
    """Both APIs in one event loop until `stop` is set (then both shut down gracefully
    and serve returns): uvicorn on the REST socket, grpcio's asyncio server on --port
    (SO_REUSEPORT, as every process binds it)."""
    import grpc
    import uvicorn

    from graph_mnist.serving import grpc_api
    loop = asyncio.get_running_loop()
    versions.serve_on(loop)  # where retiring versions finish
    grpc_server = None
    if options.grpc_port:
        grpc_server = grpc.aio.server(options=[
            ('grpc.so_reuseport', 1), ('grpc.max_receive_message_length', options.max_body_bytes),
            ('grpc.max_send_message_length', 64 * 1024 * 1024)])
        grpc_api.add_to(grpc_server, core)
        try:
            grpc_server.add_insecure_port(address(options.host, options.grpc_port))
        except RuntimeError as e:
            raise UserError(f'cannot listen on {address(options.host, options.grpc_port)} '
                            f'(gRPC): {e}') from None
        await grpc_server.start()
    if grpc_reserved is not None:
        grpc_reserved.close()
    ready()  # both listen (uvicorn takes the REST socket's waiting connections)
    try:
        if rest_socket is not None:
            http = Http(max_body_bytes=options.max_body_bytes, cors=options.cors,
                        metrics_path=options.metrics_path,
                        metrics_dir=os.environ.get('PROMETHEUS_MULTIPROC_DIR'))
            config = uvicorn.Config(make_app(core, http, options.models[0].name),
                                    log_level='warning', access_log=False,
                                    timeout_keep_alive=5,
                                    limit_concurrency=10 * http.max_in_flight)
            rest = uvicorn.Server(config)
            serving = asyncio.ensure_future(rest.serve(sockets=[rest_socket]))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
            rest.should_exit = True  # uvicorn's graceful shutdown
            stopped.cancel()
            await serving
        else:
            await stop.wait()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=5)


def announce(options, rest_socket, count):
    parts = []
    names = ', '.join(model.name for model in options.models)
    if rest_socket is not None:
        host, port = rest_socket.getsockname()[:2]
        parts.append(f'listening on http://{address(host, port)}/ (the drawing page; REST '
                     f'API at /v1/models/{{{names}}})' if len(options.models) > 1 else
                     f'listening on http://{address(host, port)}/ (the drawing page; REST '
                     f'API at /v1/models/{names})')
    if options.grpc_port:
        parts.append(f'gRPC API at {address(options.host, options.grpc_port)}')
    logging.info('%s, %d processes', '; '.join(parts), count)


def check(options):
    """One clear line for a base path that cannot serve, before anything starts."""
    for model in options.models:
        base = model.base_path
        if not os.path.isdir(base):
            raise UserError(f'{base} is not a directory: give the base path graph_mnist.export '
                            f'wrote (it holds numbered versions)')
        if os.path.isfile(os.path.join(base, export.SAVED_MODEL)):
            raise UserError(f'{base} is one SavedModel, not a base path of numbered versions; '
                            f'move it to {os.path.join(base, "1")} or export again')
    for port in (options.port, options.grpc_port):
        claim(options.host, port)
    if not exposure.is_loopback(options.host):
        logging.warning('--host=%s: the REST API, the gRPC API and the drawing page are '
                        'open to every machine that can reach this address, without '
                        'authentication (they can send predictions, read the models\' '
                        'status and signatures, and load the server); the default '
                        '127.0.0.1 keeps them to this machine', options.host)


def settings(options, metrics):
    return Settings(options.max_batch_size, options.batch_timeout_seconds, threads(options),
                    options.max_enqueued_batches, metrics, options.warm_up,
                    options.batch_threads, options.thread_pool_name)


def loader(options, metrics):
    """load(model, version, path) -> Servable, as these options run every version."""
    return functools.partial(Servable, settings=settings(options, metrics))


def versions_for(options, board, metrics, decider=None):
    return Versions(board, loader(options, metrics), options.process_index,
                    options.max_load_retries, options.load_retry_seconds,
                    options.load_seconds, decider)


def metrics_here(options):
    if options.metrics_path and os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
        from graph_mnist.serving.metrics import Metrics
        return Metrics()
    return None


def collect_less():
    """A request's JSON is about 900 new lists: at the default threshold (700) every
    request set off a collection. At 50,000, one per ~55 requests: single-image requests
    at concurrency 32 went from 6,150-6,650/s to 7,900-8,150/s here."""
    gc.freeze()  # see Versions.step
    gc.set_threshold(50_000, 20, 20)


def serve_until_stopped(options, versions, rest_socket, grpc_reserved, metrics, ready):
    """serve() in a thread of its own until SIGTERM or Ctrl-C, which this (the main)
    thread takes: uvicorn's public Server.serve installs its own signal handlers only in
    the main thread, and those raise the signal again once it has shut down, which ended
    the process before its cleanup (the other processes, the board, the metrics
    directory) could run."""
    import uvloop  # the event loop uvicorn itself would choose, by its public API
    core = Core(versions, metrics, options.timeout_seconds)
    loop, stop, failed = uvloop.new_event_loop(), asyncio.Event(), []

    def run():
        try:
            with asyncio.Runner(loop_factory=lambda: loop) as runner:
                runner.run(serve(options, versions, core, rest_socket, grpc_reserved, ready,
                                 stop))
        except BaseException as e:  # noqa: BLE001 -- raised again in the main thread
            failed.append(e)
    previous = {signum: signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    serving = threading.Thread(target=run, name='serving')
    try:
        serving.start()
        while serving.is_alive():
            serving.join(0.2)  # signals run their handlers here, between joins
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        versions.stop()
    if failed:
        raise failed[0]


def run(options, argv):
    """Serves until SIGTERM or Ctrl-C; the exit code. argv: the command line, which the
    other processes are started with."""
    if options.process_index:
        return run_other(options)
    return run_first(options, argv)


def run_first(options, argv):
    """The first process: checks, binds, decides the versions for all, starts the
    others, and announces the address once all are ready."""
    check(options)
    rest_socket = listen(options.host, options.port) if options.port else None
    # held until gRPC listens, so no other server takes it
    grpc_reserved = (listen(options.host, options.grpc_port, backlog=None)
                     if options.grpc_port else None)
    count = options.processes or machine.usable_cores()
    board = Board.create(count)
    metrics_dir = others = None
    stopping = threading.Event()
    try:
        if options.metrics_path:  # every process writes its metrics here (inherited)
            metrics_dir = tempfile.mkdtemp(prefix='graph_mnist_metrics_',
                                           dir=os.path.dirname(board.path))
            os.environ['PROMETHEUS_MULTIPROC_DIR'] = metrics_dir
        metrics = metrics_here(options)
        others = Others(argv, board)
        decider = Decider(board, options.models, options.poll_seconds, others.running,
                          options.config_file, options.config_poll_seconds,
                          options.labels_for_unavailable)
        decider.step()  # the others start from the first decision
        ready, told = os.pipe()
        for index in range(1, count):
            others.start(index, told)
        os.close(told)
        versions = versions_for(options, board, metrics, decider)
        versions.start()  # every process holds the first versions: they answer
        wait_for(list(others.processes.values()), ready)
        collect_less()
        threading.Thread(target=others.watch, args=(decider, options.load_seconds, stopping),
                         name='others', daemon=True).start()
        for model in options.models:
            if not board.decision().get(model.name, {}).get('served'):
                logging.warning('no version of %s under %s yet: waiting for one (requests '
                                'get 404)', model.name, model.base_path)
        serve_until_stopped(options, versions, rest_socket, grpc_reserved, metrics,
                            lambda: announce(options, rest_socket, count))
    finally:
        stopping.set()
        if others is not None:
            others.stop()
        board.close(remove=True)
        if metrics_dir:  # ours only: never a directory the environment named
            shutil.rmtree(metrics_dir, ignore_errors=True)
        for sock in (rest_socket, grpc_reserved):
            if sock is not None:
                sock.close()
    logging.info('stopped')
    return 0


def run_other(options):
    """One of the others: quiet, on the first one's ports, following its decisions,
    ending with it; it listens only once loaded, so no connection waits on it."""
    logging.set_verbosity(logging.WARNING)
    board = Board(options.board)
    end_with(os.getppid())
    rest_socket = None
    try:
        metrics = metrics_here(options)
        versions = versions_for(options, board, metrics)
        versions.start()
        collect_less()
        if options.port:
            rest_socket = listen(options.host, options.port)
        os.write(options.ready_fd, b'1')
        os.close(options.ready_fd)
        serve_until_stopped(options, versions, rest_socket, None, metrics, lambda: None)
    finally:
        board.close()
        if rest_socket is not None:
            rest_socket.close()
    return 0
