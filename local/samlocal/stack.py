"""Everything ``sam local invoke`` and ``sam local start-api`` need here, started and stopped as one.

A Docker daemon (the running one, or a private one), the python3.13 image (real or
stand-in), moto and the local django-oauth-toolkit upstream as ``make run`` starts them,
both relayed onto the Docker bridge (the upstream over TLS with a test CA), an image for
``--invoke-image`` that trusts the CA and points the SDK at moto, and an ``env.json`` of
the repository's shape that points the functions at the relayed upstream.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.runner.logs import LogSink
from local.runner.services import FAKE_CREDENTIALS, demo_secret, local_profile
from local.runner.stack import Stack, local_stack
from local.runner.template import REGION, load_app
from local.samlocal.bridge import Forwarder, make_test_ca
from local.samlocal.daemon import Docker, docker_daemon
from local.samlocal.image import REPO_ROOT, build_invoke_image, ensure_base_image

BUILT_TEMPLATE = REPO_ROOT / ".aws-sam" / "build" / "template.yaml"
START_API_TIMEOUT = 600.0


@dataclass(frozen=True)
class SamLocal:
    docker: Docker
    base_image: str  # "present", "pulled" or "stand-in"
    invoke_image: str
    env_file: Path
    stack: Stack  # the loopback side: moto, the upstream, the app read from the template
    work: Path

    @property
    def env(self) -> dict[str, str]:
        return {**self.docker.env, **FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0"}

    def sam_argv(self, command: str, *args: str) -> list[str]:
        sam = str(Path(sys.executable).parent / "sam")
        return [sam, "local", command, *args, "--template", str(BUILT_TEMPLATE), "--env-vars", str(self.env_file),
                "--invoke-image", self.invoke_image, "--skip-pull-image", "--region", REGION]  # fmt: skip

    def invoke(self, function: str, event: Path, timeout: float = 300.0) -> tuple[dict[str, Any], str]:
        """``sam local invoke FUNCTION -e EVENT``: the function's result and SAM's stderr."""
        done = subprocess.run(
            self.sam_argv("invoke", function, "--event", str(event)),
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        stderr = done.stderr.decode(errors="replace")
        lines = done.stdout.decode(errors="replace").strip().splitlines()
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"sam local invoke {function} failed ({done.returncode}):\n{stderr[-3000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result, stderr

    @contextmanager
    def start_api(self, port: int = 0, extra: Sequence[str] = ()) -> Iterator[str]:
        """``sam local start-api --warm-containers EAGER`` until exit; its base URL."""
        port = port or _free_port()
        log_path = self.work / f"start-api-{port}.log"
        argv = self.sam_argv("start-api", "--host", "127.0.0.1", "--port", str(port))
        argv += ["--warm-containers", "EAGER", *extra]
        with log_path.open("ab") as log:
            process = subprocess.Popen(argv, env=self.env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=log, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_serving(url, process, log_path)
            yield url
        finally:
            process.terminate()  # SAM removes its warm containers on SIGTERM
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def start_api_log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.work.glob("start-api-*.log")))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_serving(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until SAM answers HTTP (with EAGER, after every function's container is up)."""
    deadline = time.monotonic() + START_API_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sam local start-api exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/", timeout=5).close()
            return
        except urllib.error.HTTPError:
            return  # any answer (403 Missing Authentication Token) means it serves
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(
        f"sam local start-api not serving after {START_API_TIMEOUT:g} s:\n{log_path.read_text()[-3000:]}"
    )


def write_env_file(path: Path, profile: str, table: str | None) -> None:
    """The repository's env.json, pointed at the local upstream (and the local guards' table)."""
    document = json.loads((REPO_ROOT / "env.json").read_text())
    parameters = {**document.get("Parameters", {}), "BROKER_PROFILE": profile}
    if table is not None:
        parameters["BROKER_STATE_TABLE"] = table
    path.write_text(json.dumps({**document, "Parameters": parameters}, indent=2))


@contextmanager
def sam_local(sink: LogSink, work: Path | None = None) -> Iterator[SamLocal]:
    """Start everything (see the module's docstring); stop and remove it all on exit."""
    with ExitStack() as cleanup:
        if work is None:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="samlocal-")))
        docker = cleanup.enter_context(docker_daemon(work / "dockerd.log"))
        base = ensure_base_image(docker, work / "image-build.log")
        bridge_ip = docker.bridge_ip()
        app = load_app(BUILT_TEMPLATE)
        stack = cleanup.enter_context(
            local_stack(app, sink, secret=demo_secret(), needs_upstream=True, upstream_hosts=[bridge_ip])
        )
        assert stack.upstream_url is not None
        ca = make_test_ca(bridge_ip)
        moto = Forwarder(bridge_ip, _port(stack.moto_url))
        cleanup.callback(moto.close)
        upstream = Forwarder(bridge_ip, _port(stack.upstream_url), tls=ca.server_context())
        cleanup.callback(upstream.close)
        tag = f"token-broker-samlocal:{os.getpid()}"
        endpoints = {"AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url, "AWS_ENDPOINT_URL_DYNAMODB": moto.url}
        build_invoke_image(docker, tag, ca.ca_pem, endpoints)
        cleanup.callback(_remove_image, docker, tag)
        env_file = work / "env.json"
        write_env_file(env_file, local_profile(upstream.url), app.tables[0].name if app.tables else None)
        yield SamLocal(docker, base, tag, env_file, stack, work)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _remove_image(docker: Docker, tag: str) -> None:
    """On a shared daemon, the invoke image this run built (a private daemon's data root goes whole)."""
    if not docker.private:
        with contextlib.suppress(RuntimeError):
            docker.run("rmi", "--force", tag)
