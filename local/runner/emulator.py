"""Functions run under the real Lambda Runtime Interface Emulator, kept warm in a pool.

One emulator (``aws-lambda-rie`` + ``python -m awslambdaric``) serves one invocation at a
time, like one Lambda execution environment. ``EmulatorPool`` gives a request a free
emulator, starts another (lazily, on demand) up to ``max_concurrency`` per function, and
otherwise queues the request: being concurrent never fails a request.
"""

from __future__ import annotations

import http.client
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import samcli

from local.runner.logs import LogSink
from local.runner.processes import Process, Supervisor, pump
from local.runner.template import REGION, Function

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# How long past the function's own Timeout we wait before declaring the emulator stuck.
TIMEOUT_MARGIN = 5.0
_INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")


class InvocationError(Exception):
    """The emulator did not answer (crashed, hung past the timeout, refused)."""


def rie_binary() -> Path:
    """The RIE shipped inside the aws-sam-cli package, for this machine's architecture."""
    arch = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
    return Path(samcli.__file__).parent / "local" / "rapid" / f"aws-lambda-rie-{arch}"


def lambda_environment(function: Function, services: Mapping[str, str]) -> dict[str, str]:
    """What Lambda's python runtime would put in the environment, then ``services``, then the function's own."""
    python_path = [function.code_dir, *function.layer_dirs]
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": ":".join(str(p) for p in python_path),
        # Lambda's /var/task is read-only: no __pycache__, and cold starts compile as there.
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "_HANDLER": function.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout),  # the RIE enforces it
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **services,
        **function.environment,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Emulator:
    """One RIE process and its runtime, listening on loopback only."""

    def __init__(self, function: Function, env: Mapping[str, str], supervisor: Supervisor, sink: LogSink) -> None:
        self.function = function
        self._env = env
        self._supervisor = supervisor
        self._sink = sink
        self._process: Process | None = None
        self.port = 0
        self._reports = threading.Condition()
        self.report_lines: list[str] = []
        self.init_duration_ms: float | None = None

    def start(self, attempts: int = 3) -> None:
        for _ in range(attempts):
            self.port, api_port = _free_port(), _free_port()
            argv = [
                str(rie_binary()),
                "--runtime-interface-emulator-address",
                f"127.0.0.1:{self.port}",
                "--runtime-api-address",
                f"127.0.0.1:{api_port}",
                sys.executable,
                "-m",
                "awslambdaric",
                self.function.handler,
            ]
            process = self._supervisor.start(
                argv, env=self._env, cwd=self.function.code_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert process.stdout is not None
            pump(process.stdout, self._on_line)
            self._process = process
            if self._wait_listening(timeout=10.0):
                return
            self._supervisor.stop(process)  # lost a port race, most likely: try new ports
        raise InvocationError(f"{self.function.name}: the emulator did not start")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.02)
            else:
                return True
        return False

    def _on_line(self, line: str) -> None:
        self._sink.line(self.function.name, line)
        found = _INIT_REPORT.search(line)
        with self._reports:
            if found:
                self.init_duration_ms = float(found.group(1))
            if line.startswith("REPORT RequestId:"):
                self.report_lines.append(line)
                self._reports.notify_all()

    def wait_report(self, count: int, timeout: float = 5.0) -> str | None:
        """The ``count``-th REPORT line (1-based), once the RIE has printed it."""
        with self._reports:
            self._reports.wait_for(lambda: len(self.report_lines) >= count, timeout)
            return self.report_lines[count - 1] if len(self.report_lines) >= count else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def invoke(self, payload: bytes) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.function.timeout + TIMEOUT_MARGIN)
        try:
            connection.request("POST", INVOKE_PATH, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise InvocationError(f"{self.function.name}: {type(exc).__name__}") from exc
        finally:
            connection.close()
        if response.status != 200:
            raise InvocationError(f"{self.function.name}: emulator answered {response.status}")
        return body

    def stop(self) -> None:
        if self._process is not None:
            self._supervisor.stop(self._process)


class EmulatorPool:
    """Warm emulators of one function: at most ``max_concurrency``, each busy with one request."""

    def __init__(
        self,
        function: Function,
        env: Mapping[str, str],
        supervisor: Supervisor,
        sink: LogSink,
        max_concurrency: int,
    ) -> None:
        self.function = function
        self._env = env
        self._supervisor = supervisor
        self._sink = sink
        self._max = max(1, max_concurrency)
        self._idle: list[Emulator] = []
        self._count = 0
        self._closed = False
        self._available = threading.Condition()

    def acquire(self) -> Emulator:
        with self._available:
            while not self._idle and self._count >= self._max and not self._closed:
                self._available.wait()
            if self._closed:
                raise InvocationError("the runner is stopping")
            if self._idle:
                return self._idle.pop()
            self._count += 1
        emulator = Emulator(self.function, self._env, self._supervisor, self._sink)
        try:
            emulator.start()
        except BaseException:
            self._discard(emulator)
            raise
        return emulator

    def release(self, emulator: Emulator) -> None:
        if not emulator.alive():
            self._discard(emulator)
            return
        with self._available:
            self._idle.append(emulator)
            self._available.notify()

    def _discard(self, emulator: Emulator) -> None:
        emulator.stop()
        with self._available:
            self._count -= 1
            self._available.notify()

    def invoke(self, payload: bytes) -> bytes:
        emulator = self.acquire()
        try:
            body = emulator.invoke(payload)
        except InvocationError:
            self._discard(emulator)  # hung or crashed: never hand it to the next request
            raise
        self.release(emulator)
        return body

    @property
    def size(self) -> int:
        with self._available:
            return self._count

    def close(self) -> None:
        with self._available:
            self._closed = True
            idle, self._idle = self._idle, []
            self._available.notify_all()
        for emulator in idle:
            emulator.stop()
