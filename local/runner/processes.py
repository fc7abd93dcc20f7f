"""Child processes that never outlive the runner.

Every child starts in its own session (a terminal's Ctrl-C reaches only the runner, which
then stops them in order) with ``PR_SET_PDEATHSIG`` = SIGKILL, so a runner killed with
SIGKILL takes them along. The kernel sends that signal when the *thread* that forked the
child ends, so all children are forked by one long-lived thread (``Supervisor``), never by a
short-lived request thread. ``stop`` also kills whatever the child itself started (the
RIE's runtime runs in its own process group), found through ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

Process = subprocess.Popen[bytes]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def stop(process: Process, timeout: float = 5.0) -> None:
    """SIGTERM the child, SIGKILL it after ``timeout``, then SIGKILL anything it left behind.

    Its pipes are closed by the ``pump`` that reads them, at EOF.
    """
    if process.poll() is None:
        leftovers = descendants(process.pid)
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        for pid in leftovers:
            _kill(pid, signal.SIGKILL)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the child leads its own session and process group
    except (ProcessLookupError, PermissionError):
        _kill(pid, signum)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def read_ready_line(
    process: Process, timeout: float, what: str, on_line: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Wait for the first stdout line that is a JSON object with ``"ready": true``.

    A daemon thread keeps draining stdout afterwards (other lines go to ``on_line``), so the
    child can never block on a full pipe.
    """
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    ready = threading.Event()

    def forward(line: str) -> None:
        if not ready.is_set():
            lines.put(line)
        elif on_line is not None:
            on_line(line)

    pump(process.stdout, forward, on_eof=lambda: lines.put(None))
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"{what} exited before it was ready (exit {process.wait()})")
        message = _json_object(line)
        if message is not None and message.get("ready") is True:
            ready.set()
            return message
        if on_line is not None:
            on_line(line)
    raise RuntimeError(f"{what} not ready after {timeout:g} s")


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class Supervisor:
    """Starts children from one long-lived thread and stops them all, newest first."""

    def __init__(self) -> None:
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
        self._lock = threading.Lock()
        self._children: list[Process] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> Process:
        def fork() -> Process:
            return subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe enough
            )

        process = self._spawner.submit(fork).result()
        with self._lock:
            self._children.append(process)
        return process

    def stop(self, process: Process, timeout: float = 5.0) -> None:
        with self._lock:
            if process in self._children:
                self._children.remove(process)
        stop(process, timeout)

    def stop_all(self, timeout: float = 5.0) -> None:
        with self._lock:
            children, self._children = self._children[::-1], []
        threads = [threading.Thread(target=stop, args=(p, timeout)) for p in children]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._spawner.shutdown(wait=True)


def pump(
    stream: IO[bytes], on_line: Callable[[str], None], on_eof: Callable[[], None] | None = None
) -> threading.Thread:
    """Feed each line of ``stream`` to ``on_line`` from a daemon thread until EOF."""

    def run() -> None:
        try:
            for raw in iter(stream.readline, b""):
                on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass  # closed by stop()
        finally:
            stream.close()
            if on_eof is not None:
                on_eof()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
