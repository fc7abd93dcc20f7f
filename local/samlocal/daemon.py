"""A Docker daemon for ``sam local``: the one already running, or a private one for this run.

A private daemon (``dockerd --storage-driver=vfs``: no overlay filesystem is needed) keeps
its data root, exec root, pidfile and socket in a scratch folder, and is stopped and removed
when the run ends. Two private daemons would fight over the ``docker0`` bridge and the
``DOCKER`` iptables chains, so a machine-wide lock lets only one live at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

SYSTEM_SOCKET = Path("/var/run/docker.sock")
LOCK_PATH = Path(tempfile.gettempdir()) / "token-broker-dockerd.lock"
START_TIMEOUT = 60.0
LOCK_TIMEOUT = 900.0


class DockerUnavailable(RuntimeError):
    """No daemon answers and none can be started here."""


@dataclass(frozen=True)
class Docker:
    host: str  # DOCKER_HOST, e.g. unix:///tmp/tb-docker-x/docker.sock
    private: bool  # started for this run

    @property
    def env(self) -> dict[str, str]:
        """The environment for ``docker`` and ``sam``: this daemon, the classic builder."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def run(self, *args: str, timeout: float = 600.0, input_path: Path | None = None) -> str:
        """``docker ARGS``; its stdout. Raises with docker's stderr on failure."""
        with ExitStack() as files:
            stdin = files.enter_context(input_path.open("rb")) if input_path else subprocess.DEVNULL
            done = subprocess.run(
                ["docker", *args], env=self.env, stdin=stdin, capture_output=True, timeout=timeout, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"docker {args[0]} failed: {done.stderr.decode(errors='replace').strip()[-2000:]}")
        return done.stdout.decode()

    def answers(self) -> bool:
        try:
            self.run("version", "--format", "{{.Server.Version}}", timeout=10)
        except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError):
            return False
        return True

    def bridge_ip(self) -> str:
        """The host's address on the default bridge: what a container reaches the host by."""
        config = json.loads(self.run("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"))
        gateway = next((entry.get("Gateway") for entry in config if entry.get("Gateway")), None)
        if gateway:
            return str(gateway)
        # dockerd 20.10 leaves Gateway out of the default bridge's IPAM: the subnet's first host.
        subnet = str(config[0]["Subnet"])
        network, _, _ = subnet.partition("/")
        octets = network.split(".")
        return ".".join([*octets[:3], str(int(octets[3]) + 1)])


def _existing() -> Docker | None:
    for host in filter(None, [os.environ.get("DOCKER_HOST"), f"unix://{SYSTEM_SOCKET}"]):
        docker = Docker(host, private=False)
        if docker.answers():
            return docker
    return None


@contextmanager
def _machine_lock() -> Iterator[None]:
    with LOCK_PATH.open("a") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DockerUnavailable(f"another private dockerd holds {LOCK_PATH}") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _private(log_path: Path) -> Iterator[Docker]:
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise DockerUnavailable(
            "no Docker daemon answers and none can be started here: install Docker "
            "(`apt-get install docker.io` as root) or set DOCKER_HOST"
        )
    # /tmp, not the worktree: a unix socket path must stay under ~100 characters.
    scratch = Path(tempfile.mkdtemp(prefix="tb-docker-"))
    docker = Docker(f"unix://{scratch}/docker.sock", private=True)
    argv = [dockerd, "--data-root", str(scratch / "data")]
    argv += ["--exec-root", str(scratch / "exec"), "--pidfile", str(scratch / "docker.pid"), "-H", docker.host]
    with _machine_lock(), log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not docker.answers():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise DockerUnavailable(f"dockerd did not start; its log: {log_path}")
                time.sleep(0.3)
            yield docker
        finally:
            process.terminate()  # dockerd stops its containers and its containerd
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def docker_daemon(log_path: Path) -> Iterator[Docker]:
    """The running daemon (``DOCKER_HOST`` or the system socket), else a private one until exit."""
    existing = _existing()
    if existing is not None:
        yield existing
        return
    with _private(log_path) as docker:
        yield docker
