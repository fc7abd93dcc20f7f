"""Run the local runner as a subprocess from tests: ``run_broker`` → ``LocalBroker``.

The runner starts with ``--no-build`` (build once per test session with ``sam_build``) and
``--port 0``; its stderr (every log line: the runner's, the functions', moto's, the
upstream's) goes to ``<dir>/runner.log``, read back by ``LocalBroker.logs()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.runner.processes import Process, Supervisor, descendants, read_ready_line
from local.runner.services import REPO_ROOT, put_secret, secrets_client

READY_TIMEOUT = 90.0


@dataclass
class LocalBroker:
    url: str
    moto_url: str
    upstream_url: str | None
    secret_ids: list[str]
    routes: list[dict[str, str]]
    api_key: str
    process: Process
    log_path: Path
    supervisor: Supervisor = field(repr=False)
    banner: str = ""  # what the runner printed on stdout before its ready line

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        """Everything logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def put_secret(self, value: Mapping[str, Any] | str, secret_id: str | None = None) -> None:
        """Store a new version of the secret (every secret the functions read when ``secret_id`` is None)."""
        for name in [secret_id] if secret_id else self.secret_ids:
            put_secret(self.moto_url, name, value)

    def delete_secret(self, secret_id: str | None = None) -> None:
        client = secrets_client(self.moto_url)
        for name in [secret_id] if secret_id else self.secret_ids:
            client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)

    def get_secret(self, secret_id: str | None = None) -> str:
        name = secret_id or self.secret_ids[0]
        return secrets_client(self.moto_url).get_secret_value(SecretId=name)["SecretString"]

    def upstream_refresh(self, refresh_token: str) -> requests.Response:
        """The refresh grant sent straight to the local upstream, bypassing the broker."""
        assert self.upstream_url is not None, "no local upstream: a profile was given"
        return requests.post(
            f"{self.upstream_url}/auth/token/",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=("demo-client", "demo-client-secret"),
            timeout=30,
        )

    def signed_post(self, path: str, body: bytes = b"") -> requests.Response:
        """POST signed with SigV4 by the local IAM principal, as an AWS_IAM caller would."""
        request = AWSRequest(method="POST", url=f"{self.url}{path}", data=body)
        SigV4Auth(Credentials("testing", "testing"), "execute-api", "us-east-1").add_auth(request)
        return requests.post(f"{self.url}{path}", data=body, headers=dict(request.headers.items()), timeout=30)

    def children(self) -> list[int]:
        """Every live process the runner started (emulators, runtimes, moto, upstream)."""
        return descendants(self.pid)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the runner (it stops its children), SIGKILL everything after ``timeout``."""
        self.supervisor.stop(self.process, timeout)
        self.supervisor.stop_all()
        return self.process.returncode


@contextmanager
def run_broker(
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
    secret: Mapping[str, Any] | None = None,
    max_concurrency: int = 2,
    *,
    template: Path | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
    origins: Sequence[str] | None = None,
) -> Iterator[LocalBroker]:
    """Start ``python -m local.runner --no-build`` and stop it (and everything it started) on exit."""
    work = Path(tempfile.mkdtemp(prefix="broker-", dir=tmp_path))
    argv = [sys.executable, "-m", "local.runner", "--no-build", "--port", "0"]
    argv += ["--max-concurrency", str(max_concurrency), "--state-dir", str(work / "upstream")]
    if template is not None:
        argv += ["--template", str(template)]
    if profile is not None:
        argv += ["--profile", profile]
    if secret is not None:
        (work / "secret.json").write_text(json.dumps(secret))
        argv += ["--secret-file", str(work / "secret.json")]
    if env:
        argv += ["--env", *(f"{k}={v}" for k, v in env.items())]
    if origins is not None:
        argv += ["--origins", ",".join(origins)]
    if parameter_overrides:
        argv += ["--parameter-overrides", *(f"{k}={v}" for k, v in parameter_overrides.items())]
    log_path = work / "runner.log"
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    supervisor = Supervisor()
    with log_path.open("ab") as log:
        process = supervisor.start(
            argv, env={**os.environ, "PYTHONPATH": pythonpath}, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log
        )
    try:
        banner: list[str] = []
        try:
            ready = read_ready_line(process, READY_TIMEOUT, "local runner", on_line=banner.append)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log_path.read_text(errors='replace')[-3000:]}") from exc
        broker = LocalBroker(
            url=ready["url"],
            moto_url=ready["moto_url"],
            upstream_url=ready["upstream_url"],
            secret_ids=list(ready["secret_ids"]),
            routes=list(ready["routes"]),
            api_key=str(ready["api_key"]),
            process=process,
            log_path=log_path,
            supervisor=supervisor,
            banner="\n".join(banner),
        )
        yield broker
    finally:
        # SIGTERM; after 20 s SIGKILL, and SIGKILL for any child the runner failed to stop.
        supervisor.stop(process, 20.0)
        supervisor.stop_all()
