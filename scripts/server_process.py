"""A graph_mnist.serve server in a process of its own, for the tests, the load
benchmark and the page's screenshot (not part of the package: nothing a user serves
with needs it)."""

import os
import re
import socket
import subprocess
import sys
import threading


def free_port():
    """A port free on 127.0.0.1 now (TensorFlow Serving's port 0 means "off", so a
    server under test is given free ports by number)."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


class Subprocess:
    """`python -m graph_mnist.serve` in a process of its own on free loopback ports, for
    tests, the load benchmark and the screenshot: `with Subprocess(base) as server:
    server.url` (REST), `server.grpc_target` (gRPC). Stopped (SIGTERM, then SIGKILL) when
    the block ends, however it ends."""

    LISTENING = re.compile(r'listening on (http://[^/\s]+)/')

    def __init__(self, model_base_path, *flags, timeout=120, env=None):
        """model_base_path None: none given (a model config file or the environment
        names it); env: variables added to ours."""
        self.lines = []
        self.grpc_port = free_port()
        self.grpc_target = f'127.0.0.1:{self.grpc_port}'  # as grpc.insecure_channel takes it
        base = [] if model_base_path is None else [f'--model_base_path={model_base_path}']
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'graph_mnist.serve', *base,
             '--host=127.0.0.1', f'--rest_api_port={free_port()}',
             f'--port={self.grpc_port}', *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=None if env is None else {**os.environ, **env})
        found = threading.Event()

        def drain():  # keep reading, or the server would block on a full pipe
            for line in self.process.stderr:
                self.lines.append(line)
                if self.LISTENING.search(line):
                    found.set()
            found.set()
        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError('the server did not start:\n' + ''.join(self.lines[-20:]))
        self.url = next(m[1] for m in map(self.LISTENING.search, self.lines) if m)

    def log(self):
        return ''.join(self.lines)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
