"""Start the local upstream as a subprocess for tests: ``start_upstream``, ``running_upstream``."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_FILENAME = "upstream.log"
READY_TIMEOUT = 20.0  # seconds; start-up takes ~0.5 s

Process = subprocess.Popen[str]


def start_upstream(state_dir: Path, **options: str | int) -> tuple[str, Process]:
    """Start ``python -m local.upstream`` and wait for its ready line.

    ``options`` are the command-line options in snake_case (``client_secret="x"``).
    Its stderr (the access log) goes to ``state_dir/upstream.log``. Returns the base
    URL and the process; the caller must ``stop_upstream`` it (or use ``running_upstream``).
    """
    arguments: dict[str, str | int] = {"port": 0, "state_dir": str(state_dir), **options}
    argv = [sys.executable, "-m", "local.upstream"]
    for name, value in arguments.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    state_dir.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    with (state_dir / LOG_FILENAME).open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath},
        )
    try:
        ready = json.loads(_read_line(process, READY_TIMEOUT, state_dir / LOG_FILENAME))
        return str(ready["url"]), process
    except BaseException:
        stop_upstream(process)
        raise


def stop_upstream(process: Process, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@contextmanager
def running_upstream(state_dir: Path, **options: str | int) -> Iterator[tuple[str, Process]]:
    """``start_upstream`` that always stops the process on exit."""
    url, process = start_upstream(state_dir, **options)
    try:
        yield url, process
    finally:
        stop_upstream(process)


def _read_line(process: Process, timeout: float, log: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            line = process.stdout.readline()
            if line:
                return line
            break  # EOF: the process died before it was ready
    raise RuntimeError(f"local upstream not ready (exit {process.poll()}):\n{log.read_text()[-2000:]}")
