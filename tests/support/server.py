"""A real `face-emotion serve` (or any HTTP server command) in a subprocess, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, *options: str) -> list[str]:
    """The command line of `face-emotion serve` on ``port``, run by this Python."""
    return [sys.executable, "-m", "face_emotion", "serve", "--port", str(port), *options]


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "face-emotion-test-boundary"
              ) -> tuple[bytes, str]:
    """(field, filename, data) parts -> a multipart/form-data body and its Content-Type."""
    chunks = []
    for field_name, filename, data in parts:
        disposition = f'Content-Disposition: form-data; name="{field_name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\n{disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
                      + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class ServerProcess:
    """``command`` in its own session (so stopping it stops gunicorn's workers too), logging to
    ``log_path``; :meth:`start` returns once GET /health answers 200 (and ``ready()`` is true)."""

    def __init__(self, command: list[str], port: int, log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, name: str = "server"):
        self.command, self.port, self.log_path = command, port, Path(log_path)
        self.env, self.cwd, self.name = dict(env or {}), cwd, name
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def launch(self) -> "ServerProcess":
        """Start the process without waiting for it to answer."""
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.command, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env}, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120, ready: Callable[[], bool] = lambda: True) -> "ServerProcess":
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} stopped while starting:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer /health within {timeout_s} s:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200 and ready():
                        return self
            except OSError:
                pass
            time.sleep(0.3)

    def start(self, timeout_s: float = 120, ready: Callable[[], bool] = lambda: True) -> "ServerProcess":
        return self.launch().wait_ready(timeout_s, ready)

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the master and its workers
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "ServerProcess":
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
