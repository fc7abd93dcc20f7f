"""`make bench`: the broker against its floor, side by side, in one run, as ratios.

The machine is shared and noisy, so every figure is a ratio to a baseline measured in the
same run, interleaved with it. Every figure is printed with the command that produced it and
written with the date and versions to bench/results.local.md (untracked), or, with --record,
to bench/results.md (`make bench RECORD=1`).

Where the code runs, as Lambda runs it:
- a Lambda-like ``site-packages`` (.local/bench/runtime): only what the python3.13 runtime
  ships (boto3, botocore and their dependencies), awslambdaric, and requests for the naive
  yardstick, symlinked from the dev venv (same versions, offline). The dev venv also holds
  awscrt and pyOpenSSL (from aws-sam-cli and moto), which botocore imports whenever it finds
  them; the Lambda runtime has neither, so they would skew every SDK figure;
- the layer exactly as `sam build` ships it (.aws-sam/build/BrokerCoreLayer/python: its
  requirements, the broker core and their unchecked-hash .pyc files, layers/broker/Makefile),
  and the functions as sources (.local/bench/stage), with PYTHONDONTWRITEBYTECODE, as
  Lambda's read-only /opt and /var/task cannot cache bytecode. For comparison, the same layer
  without its .pyc files (.local/bench/stage-src): what `BuildMethod: python3.13` ships.

Usage: .venv/bin/python bench/run.py [--quick] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = ROOT / ".local" / "bench"
RUNTIME = WORK / "runtime"
STAGE = WORK / "stage"
STAGE_SRC = WORK / "stage-src"
BUILT_LAYER = ROOT / ".aws-sam" / "build" / "BrokerCoreLayer" / "python"
PY = RUNTIME / "bin" / "python"
# Each function and the events/ file it is invoked with (logout takes a refresh token in body mode).
FUNCTIONS = {"password": "password-json", "refresh": "refresh-json", "exchange": "exchange", "logout": "refresh-json"}
BACKENDS = ("sdk", "extension")
# The python3.13 runtime's own packages, the runtime interface client, the naive yardstick's.
RUNTIME_ROOTS = ("boto3", "awslambdaric", "requests")
# warm: broker p50 over a raw urllib3 POST, both to the upstream that works ~2 ms per token request.
TARGETS = {"warm": 1.1, "naive": 5.0, "import_sdk": 1.15, "import_extension": 1.3, "rss_mib": 80.0}
RESULTS = BENCH / "results.local.md"  # untracked: a run on this machine, for this machine
RECORDED = BENCH / "results.md"  # the tracked record, written only when asked (--record)

MINIMAL_HANDLER = '''"""Cold-start floor: one urllib3 POST to the upstream, nothing else."""
import os

import urllib3

POOL = urllib3.PoolManager()


def lambda_handler(event, context):
    answer = POOL.request(
        "POST",
        os.environ["BROKER_TOKEN_URL"],
        body=b"grant_type=password&username=demo&password=demo-password",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return {"statusCode": answer.status, "body": answer.data.decode()}
'''


# ---------------------------------------------------------------- setup


def build_runtime() -> list[str]:
    """A venv whose site-packages holds only the runtime's distributions (symlinks)."""
    shutil.rmtree(RUNTIME, ignore_errors=True)
    # The interpreter the dev venv was made from (a venv of a venv would link back to the dev venv).
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / version
    if not base.exists():
        base = Path(sys.executable).resolve()
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(RUNTIME)], check=True)
    site = Path(
        subprocess.run(
            [str(PY), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    roots = list(RUNTIME_ROOTS)  # the layer's own requirements come with the built layer
    names: list[str] = []
    pending = roots[:]
    while pending:
        name = pending.pop()
        if name.lower() in {n.lower() for n in names}:
            continue
        dist = metadata.distribution(name)
        names.append(dist.metadata["Name"])
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
        linked: set[str] = set()
        for file in dist.files or []:
            parts = file.parts
            if parts[0] == "..":
                continue
            top = parts[0] if parts[0] != "__pycache__" else "/".join(parts[:2])
            if top in linked:
                continue
            linked.add(top)
            target = site / top
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(Path(str(dist.locate_file(top))))
    return sorted(names, key=str.lower)


def stage_code() -> None:
    """The built layer and the function sources; a copy of both with the layer's .pyc removed."""
    sources = ROOT / "layers" / "broker" / "broker"
    built = BUILT_LAYER / "broker"
    if not built.is_dir():
        raise SystemExit("No built layer: run `make build` first (`make bench` does).")
    stale = [
        str(p.relative_to(sources))
        for p in sources.rglob("*.py")
        if "__pycache__" not in p.parts
        and (
            not (built / p.relative_to(sources)).is_file()
            or p.read_bytes() != (built / p.relative_to(sources)).read_bytes()
        )
    ]
    if stale:
        raise SystemExit(f"The built layer is older than layers/broker ({', '.join(stale)}): run `make build`.")
    for stage, keep_bytecode in ((STAGE, True), (STAGE_SRC, False)):
        shutil.rmtree(stage, ignore_errors=True)
        ignore = None if keep_bytecode else shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(BUILT_LAYER, stage / "layer", symlinks=True, ignore=ignore)
        for name in FUNCTIONS:
            shutil.copytree(ROOT / "functions" / name, stage / name, ignore=shutil.ignore_patterns("__pycache__"))
        (stage / "minimal").mkdir()
        (stage / "minimal" / "app.py").write_text(MINIMAL_HANDLER)


@contextlib.contextmanager
def local_servers() -> Iterator[dict[str, int]]:
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "servers.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        ports: dict[str, int] = json.loads(process.stdout.readline())
        yield ports
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def function_env(
    ports: dict[str, int],
    backend: str,
    extra_path: Sequence[Path] = (),
    stage: Path = STAGE,
    upstream_port: str = "upstream",
) -> dict[str, str]:
    """``upstream_port``: ``upstream`` (answers at once) or ``work_upstream`` (~2 ms of work per request)."""
    upstream = f"http://127.0.0.1:{ports[upstream_port]}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(WORK),  # no ~/.aws: Lambda has none
        "PYTHONPATH": os.pathsep.join(str(p) for p in (stage / "layer", *extra_path)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",  # awslambdaric makes stdout unbuffered too
        # What Lambda sets in every execution environment (its reserved variables), which
        # Powertools reads on each invocation; awslambdaric sets _X_AMZN_TRACE_ID per invocation
        # from the Lambda-Runtime-Trace-Id header (Sampled=0 when tracing is off).
        "TZ": ":UTC",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": "bench-function",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_X_AMZN_TRACE_ID": "Root=1-6742c1a0-5f1e2d3c4b5a69788796a5b4;Parent=53995c3f42cd8ad8;Sampled=0",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench-session-token",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{ports['secretsmanager']}",
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(ports["extension"]),
        "POWERTOOLS_SERVICE_NAME": "token-broker",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "BROKER_SECRET_ID": "token-broker/client",
        # The bakrypt preset's shape (client_secret_post, form), every endpoint on the local upstream.
        "BROKER_PROFILE": json.dumps(
            {
                "token_url": f"{upstream}/auth/token/",
                "exchange_url": f"{upstream}/auth/exchange/",
                "revocation_url": f"{upstream}/auth/revoke_token/",
                "client_auth": "client_secret_post",
                "encoding": "form",
            }
        ),
        "BROKER_TOKEN_URL": f"{upstream}/auth/token/",
        "BROKER_EXCHANGE_URL": f"{upstream}/auth/exchange/",
        "BROKER_ALLOWED_ORIGINS": "http://localhost:5173",
        "BROKER_SECRETS_BACKEND": backend,
    }


def control(ports: dict[str, int], method: str) -> dict[str, int]:
    conn = http.client.HTTPConnection("127.0.0.1", ports["control"], timeout=10)
    conn.request(method, "/stats")
    counts: dict[str, int] = json.loads(conn.getresponse().read())
    conn.close()
    return counts


# ---------------------------------------------------------------- measurements


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def cold_imports(ports: dict[str, int], rounds: int) -> dict[str, dict[str, Any]]:
    """Fresh interpreters, interleaved round by round; wall time from spawn to exit."""
    cases: dict[str, tuple[str, Path, str]] = {
        "bare interpreter": ("pass", STAGE / "password", "sdk"),
        "import urllib3": ("import urllib3", STAGE / "password", "sdk"),
        "urllib3 + boto3 client": (
            "import boto3; boto3.client('secretsmanager')",
            STAGE / "password",
            "sdk",
        ),
        "urllib3 + botocore client": (
            "import botocore.session; botocore.session.get_session().create_client('secretsmanager')",
            STAGE / "password",
            "sdk",
        ),
    }
    for backend in BACKENDS:
        for name in FUNCTIONS:
            cases[f"{name} ({backend})"] = ("import app", STAGE / name, backend)
    for backend in BACKENDS:
        cases[f"password ({backend}), layer without .pyc"] = ("import app", STAGE_SRC / "password", backend)
    # The guards (on by default in the template) build a DynamoDB client and load cryptography
    # at init in login and refresh, whatever the secrets backend: shown, no target.
    guarded = {"BROKER_STATE_TABLE": "token-broker-state"}
    for backend in BACKENDS:
        cases[f"password ({backend}), guards on"] = ("import app", STAGE / "password", backend)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for label, (code, cwd, backend) in cases.items():
            env = function_env(ports, backend, stage=cwd.parent)
            if label.endswith("guards on"):
                env.update(guarded)
            start = time.perf_counter()
            subprocess.run([str(PY), "-c", code], cwd=cwd, env=env, check=True)
            times[label].append(time.perf_counter() - start)
    return {
        label: {
            "median_ms": median_ms(times[label]),
            "runs": rounds,
            "command": f'python3.13 -c "{code}"'
            + (
                f"  (cwd {cwd.parent.name}/{cwd.name}/, BROKER_SECRETS_BACKEND={backend}"
                + (", BROKER_STATE_TABLE=token-broker-state" if label.endswith("guards on") else "")
                + ")"
                if code == "import app"
                else ""
            ),
        }
        for label, (code, cwd, backend) in cases.items()
    }


def import_profile(
    ports: dict[str, int], code: str, cwd: Path, backend: str, runs: int
) -> dict[str, tuple[float, float]]:
    """-X importtime, median self and cumulative µs per module over ``runs`` interpreters."""
    own: dict[str, list[int]] = defaultdict(list)
    cumulative: dict[str, list[int]] = defaultdict(list)
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")
    for _ in range(runs):
        done = subprocess.run(
            [str(PY), "-X", "importtime", "-c", code],
            cwd=cwd,
            env=function_env(ports, backend),
            check=True,
            capture_output=True,
            text=True,
        )
        for match in pattern.finditer(done.stderr):
            own[match[3]].append(int(match[1]))
            cumulative[match[3]].append(int(match[2]))
    return {name: (statistics.median(own[name]), statistics.median(cumulative[name])) for name in own}


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            children[int(stat.read_text().rsplit(")", 1)[-1].split()[1])].append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rie_binary() -> Path:
    import samcli  # the aws-sam-cli package ships the Lambda Runtime Interface Emulator

    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    return Path(samcli.__file__).parent / "local" / "rapid" / f"aws-lambda-rie-{arch}"


def first_response(ports: dict[str, int], name: str, backend: str, event: bytes, log: Path) -> float:
    """RIE process start to the first 200, the function initialised on that first invoke."""
    api, runtime_api = free_port(), free_port()
    command = [
        str(rie_binary()),
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{api}",
        "--runtime-api-address",
        f"127.0.0.1:{runtime_api}",
        str(PY),
        "-m",
        "awslambdaric",
        "app.lambda_handler",
    ]
    with log.open("ab") as sink:
        start = time.perf_counter()
        rie = subprocess.Popen(
            command,
            cwd=STAGE / name,
            env=function_env(ports, backend),
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
        try:
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", api, timeout=30)
                    conn.request("POST", "/2015-03-31/functions/function/invocations", body=event)
                    answer = json.loads(conn.getresponse().read())
                    break
                except ConnectionRefusedError:
                    time.sleep(0.002)
            elapsed = time.perf_counter() - start
            if answer.get("statusCode") != 200:
                raise SystemExit(f"{name} ({backend}) under the RIE answered {answer}; see {log}")
            return elapsed
        finally:
            for pid in [*descendants(rie.pid), rie.pid]:  # the runtime runs in its own group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            rie.wait()


def cold_responses(ports: dict[str, int], rounds: int) -> dict[str, dict[str, Any]]:
    cases = [("minimal", "sdk", "password-json")] + [
        (name, backend, event) for backend in BACKENDS for name, event in FUNCTIONS.items()
    ]
    log = WORK / "rie.log"
    log.write_bytes(b"")
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, backend, event in cases:
            label = "minimal urllib3 handler" if name == "minimal" else f"{name} ({backend})"
            body = (ROOT / "events" / f"{event}.json").read_bytes()
            times[label].append(first_response(ports, name, backend, body, log))
    return {label: {"median_ms": median_ms(values), "runs": rounds} for label, values in times.items()}


def child(ports: dict[str, int], name: str, backend: str, args: list[str], upstream_port: str = "upstream") -> Any:
    with tempfile.NamedTemporaryFile(dir=WORK, suffix=".json", delete=False) as out:
        path = Path(out.name)
    event = ROOT / "events" / f"{FUNCTIONS[name]}.json"
    with (WORK / f"{name}-{backend}-{args[0]}-{upstream_port}.log").open("wb") as log:
        subprocess.run(
            [str(PY), str(BENCH / "warm.py"), args[0], str(event), *args[1:], str(path)],
            cwd=STAGE / name,
            env=function_env(ports, backend, extra_path=[BENCH], upstream_port=upstream_port),
            stdout=log,
            check=True,
        )
    result = json.loads(path.read_text())
    path.unlink()
    return result


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1000  # ns -> µs


# ---------------------------------------------------------------- report


def versions(runtime: list[str]) -> str:
    wanted = {"boto3", "botocore", "s3transfer", "urllib3", "awslambdaric", "requests", "fastjsonschema"}
    parts = [f"Python {platform.python_version()}"]
    parts += [f"{name} {metadata.version(name)}" for name in runtime if name.lower() in wanted]
    parts += [
        f"moto {metadata.version('moto')} (local Secrets Manager)",
        f"aws-sam-cli {metadata.version('aws-sam-cli')} (RIE)",
    ]
    return ", ".join(parts)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run (writes no results)")
    parser.add_argument("--record", action="store_true", help=f"write {RECORDED.relative_to(ROOT)}, the tracked record")
    options = parser.parse_args()
    import_rounds, rie_rounds, warm_rounds = (5, 2, 500) if options.quick else (21, 5, 3000)

    started = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    runtime = build_runtime()
    stage_code()
    lines: list[str] = []
    targets: list[tuple[str, bool, str]] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with local_servers() as ports:
        # Cold import
        imports = cold_imports(ports, import_rounds)
        bare = imports["bare interpreter"]["median_ms"]
        floor_urllib3 = imports["import urllib3"]["median_ms"]
        floor_sdk = imports["urllib3 + boto3 client"]["median_ms"]
        say("## Cold import")
        say()
        say(f"Wall time of a fresh interpreter, median of {import_rounds} interleaved runs each.")
        say()
        say("| what | median | × bare | × urllib3 | × boto3 client | command |")
        say("|---|---:|---:|---:|---:|---|")
        for label, row in imports.items():
            ms = row["median_ms"]
            say(
                f"| {label} | {ms:.0f} ms | {ms / bare:.2f} | {ms / floor_urllib3:.2f} | {ms / floor_sdk:.2f} "
                f"| `{row['command']}` |"
            )
        for name in FUNCTIONS:
            ratio = imports[f"{name} (sdk)"]["median_ms"] / floor_sdk
            targets.append(
                (
                    f"cold import {name} (sdk) ≤ {TARGETS['import_sdk']}× boto3 client",
                    ratio <= TARGETS["import_sdk"],
                    f"{ratio:.2f}×",
                )
            )
        for name in FUNCTIONS:
            ratio = imports[f"{name} (extension)"]["median_ms"] / floor_urllib3
            targets.append(
                (
                    f"cold import {name} (extension) ≤ {TARGETS['import_extension']}× urllib3",
                    ratio <= TARGETS["import_extension"],
                    f"{ratio:.2f}×",
                )
            )

        # What the imports cost
        profile = import_profile(ports, "import app", STAGE / "password", "sdk", 5)
        say()
        say(
            "Ten costliest imports of `password` (sdk), self time, median of 5 runs of "
            '`python3.13 -X importtime -c "import app"`:'
        )
        say()
        say("(`app`'s own time is creating the botocore client at import, in the init phase.)")
        say()
        say("| module | self | cumulative |")
        say("|---|---:|---:|")
        for module, (own, cumulative) in sorted(profile.items(), key=lambda kv: -kv[1][0])[:10]:
            say(f"| {module} | {own / 1000:.1f} ms | {cumulative / 1000:.1f} ms |")
        boto3_profile = import_profile(
            ports, "import boto3; boto3.client('secretsmanager')", STAGE / "password", "sdk", 5
        )
        s3transfer_ms = boto3_profile.get("s3transfer", (0, 0))[1] / 1000
        boto3_ms = boto3_profile["boto3"][1] / 1000
        share = s3transfer_ms / boto3_ms
        saved = floor_sdk - imports["urllib3 + botocore client"]["median_ms"]
        say()
        say(
            f"`import boto3` spends {s3transfer_ms:.0f} ms of its {boto3_ms:.0f} ms in s3transfer "
            f"({share:.0%}; `python3.13 -X importtime -c \"import boto3; boto3.client('secretsmanager')\"`, "
            f"median of 5). Creating the client through botocore instead saves {saved:.0f} ms of wall time "
            f"({saved / floor_sdk:.0%} of the boto3-client baseline)."
            + (
                " Over 10%: the broker creates its client through botocore."
                if share > 0.10
                else " Under 10% in this run; the broker creates its client through botocore all the same."
            )
        )

        # Cold first response
        responses = cold_responses(ports, rie_rounds)
        floor = responses["minimal urllib3 handler"]["median_ms"]
        say()
        say("## Cold first response (Lambda Runtime Interface Emulator)")
        say()
        say(
            f"`aws-lambda-rie … python3.13 -m awslambdaric app.lambda_handler` started, then the first invoke "
            f"POSTed until it answers 200: process start to first 200, median of {rie_rounds} interleaved runs."
        )
        say()
        say("| function | median | × minimal urllib3 handler |")
        say("|---|---:|---:|")
        for label, row in responses.items():
            say(f"| {label} | {row['median_ms']:.0f} ms | {row['median_ms'] / floor:.2f} |")

        # Warm overhead: against an upstream that works, then against one that answers at once
        control(ports, "POST")
        loop = ["loop", str(warm_rounds), "0", "parts"]
        worked = child(ports, "password", "sdk", loop, upstream_port="work_upstream")
        work_counts = control(ports, "GET")
        served = max(1, work_counts["work_requests"])
        work_us, work_cpu_us = work_counts["work_ns"] / served / 1000, work_counts["work_cpu_ns"] / served / 1000
        samples = child(ports, "password", "sdk", ["loop", str(warm_rounds), "10", "whole"])
        broker_p50, raw_p50, naive_p50 = (percentile(samples[k], 0.5) for k in ("broker", "raw", "naive"))
        broker_p99, raw_p99, naive_p99 = (percentile(samples[k], 0.99) for k in ("broker", "raw", "naive"))
        work_broker_p50, work_raw_p50 = (percentile(worked[k], 0.5) for k in ("broker", "raw"))
        work_broker_p99, work_raw_p99 = (percentile(worked[k], 0.99) for k in ("broker", "raw"))
        unlogged_p50, undecorated_p50 = (percentile(worked[k], 0.5) for k in ("no_log_line", "no_decorator"))
        unlogged_p99, undecorated_p99 = (percentile(worked[k], 0.99) for k in ("no_log_line", "no_decorator"))
        work_target_ms = ports["work_target_us"] / 1000
        work_ratio = work_broker_p50 / work_raw_p50
        work_added = work_broker_p50 - work_raw_p50
        say()
        say("## Warm overhead")
        say()
        say(
            f"`warm.py loop`: in one process and one loop, interleaved (which goes first alternates), "
            f"{warm_rounds} rounds after 200 warm-up: `app.lambda_handler(event, context)` (password, JSON "
            "event, log line included) and a raw `PoolManager().request('POST', …)` to the same upstream "
            "(each call takes each place in the round in turn)."
        )
        say()
        say(
            f"Against an upstream that does real work per token request, as an authorization server does "
            f"(bench/servers.py: PBKDF2-HMAC-SHA256 of the request body, {ports['work_iterations']} iterations "
            f"calibrated to {work_target_ms:g} ms of CPU at start; measured at the server during this loop, "
            f"{work_cpu_us:.0f} µs of CPU and {work_us:.0f} µs of wall time per request on average; loopback, "
            "keep-alive, `TCP_NODELAY`). This is the headline figure."
        )
        say()
        say("| call | p50 | p99 | p50 × raw urllib3 | added p50 |")
        say("|---|---:|---:|---:|---:|")
        say(f"| raw urllib3 `PoolManager.request` | {work_raw_p50:.0f} µs | {work_raw_p99:.0f} µs | 1.00 | — |")
        say(
            f"| broker `handler(event, context)` | {work_broker_p50:.0f} µs | {work_broker_p99:.0f} µs "
            f"| {work_ratio:.2f} | {work_added:+.0f} µs |"
        )
        say(
            f"| the same, without its log line | {unlogged_p50:.0f} µs | {unlogged_p99:.0f} µs "
            f"| {unlogged_p50 / work_raw_p50:.2f} | {unlogged_p50 - work_raw_p50:+.0f} µs |"
        )
        say(
            f"| the same, also without `inject_lambda_context` | {undecorated_p50:.0f} µs | {undecorated_p99:.0f} µs "
            f"| {undecorated_p50 / work_raw_p50:.2f} | {undecorated_p50 - work_raw_p50:+.0f} µs |"
        )
        say()
        say(
            "Where the added time goes (the last two rows, in the same loop): the handler with the logger's "
            "level at WARNING, so Powertools writes no INFO line, then `app.lambda_handler.__wrapped__`, "
            "the handler without Powertools' decorator. Powertools' log line: "
            f"{work_broker_p50 - unlogged_p50:.0f} µs; "
            f"`inject_lambda_context`: {unlogged_p50 - undecorated_p50:.0f} µs; the broker's own code: "
            f"{undecorated_p50 - work_raw_p50:.0f} µs."
        )
        say()
        say(
            "For information (no target): against an upstream that answers at once (a fixed token, loopback), "
            "the ratio is all overhead and no work; every 10th round the naive handler (bench/naive.py: "
            "requests, a new boto3 client and GetSecretValue per call) against the same upstream and the same "
            "local Secrets Manager."
        )
        say()
        say("| call | p50 | p99 | p50 × raw urllib3 | added p50 |")
        say("|---|---:|---:|---:|---:|")
        say(f"| raw urllib3 `PoolManager.request` | {raw_p50:.0f} µs | {raw_p99:.0f} µs | 1.00 | — |")
        say(
            f"| broker `handler(event, context)` | {broker_p50:.0f} µs | {broker_p99:.0f} µs "
            f"| {broker_p50 / raw_p50:.2f} | {broker_p50 - raw_p50:+.0f} µs |"
        )
        say(
            f"| naive handler | {naive_p50:.0f} µs | {naive_p99:.0f} µs | {naive_p50 / raw_p50:.2f} "
            f"| {naive_p50 - raw_p50:+.0f} µs |"
        )
        say()
        say(
            f"The broker adds {work_added:.0f} µs per request at p50 to a raw POST against the working upstream "
            f"({broker_p50 - raw_p50:.0f} µs against the instant one)."
        )
        targets.append(
            (
                f"warm p50 ≤ {TARGETS['warm']}× raw urllib3, upstream working {work_target_ms:g} ms/request "
                f"(added {work_added:.0f} µs)",
                work_ratio <= TARGETS["warm"],
                f"{work_ratio:.2f}×",
            )
        )
        targets.append(
            (
                f"naive p50 ≥ {TARGETS['naive']}× broker p50",
                naive_p50 / broker_p50 >= TARGETS["naive"],
                f"{naive_p50 / broker_p50:.1f}×",
            )
        )

        # Per 1,000 warm invocations
        say()
        say("## Per 1,000 warm invocations")
        say()
        say(
            "`warm.py count`: a fresh function, 1 cold invocation then 1,000 warm ones; Secrets Manager "
            "calls and TCP connections counted at the local servers; schema compilations are calls of "
            "`fastjsonschema.compile` (the runtime does not even hold fastjsonschema: the schemas are compiled "
            "ahead of time into broker/validators), source compilations are Python's `compile` audit events "
            "(a module imported without its .pyc, exec/eval of a string, generated code)."
        )
        say()
        say(
            "| function | secret reads (first + after) | upstream TCP connections "
            "| schema compiles (import + after) | source compilations (import + after) |"
        )
        say("|---|---:|---:|---:|---:|")
        for backend in BACKENDS:
            for name in FUNCTIONS:
                control(ports, "POST")
                compiled = child(ports, name, backend, ["count", "1000"])
                counts = control(ports, "GET")
                reads = counts["secretsmanager_get"] + counts["extension_get"]
                connections = counts["upstream_connections"]
                say(
                    f"| {name} ({backend}) | 1 + {reads - 1} | {connections} "
                    f"| {compiled['schemas_at_import']} + {compiled['schemas_after_import']} "
                    f"| {compiled['sources_at_import']} + {compiled['sources_after_import']} |"
                )
                after = compiled["schemas_after_import"] + compiled["sources_after_import"]
                ok = reads == 1 and connections == 1 and after == 0
                targets.append(
                    (
                        f"1,000 warm {name} ({backend}): 0 secret reads after the first, 1 connection, 0 compilations",
                        ok,
                        f"{reads - 1}/{connections}/{after}",
                    )
                )

        # Peak RSS
        say()
        say("## Peak RSS after import and one invocation")
        say()
        say("`warm.py rss`: a fresh process imports app, invokes it once, reads `ru_maxrss`.")
        say()
        say("| function | peak RSS |")
        say("|---|---:|")
        for backend in BACKENDS:
            for name in FUNCTIONS:
                mib = child(ports, name, backend, ["rss"])["max_rss_kib"] / 1024
                say(f"| {name} ({backend}) | {mib:.1f} MiB |")
                targets.append(
                    (
                        f"peak RSS {name} ({backend}) ≤ {TARGETS['rss_mib']:.0f} MiB",
                        mib <= TARGETS["rss_mib"],
                        f"{mib:.1f} MiB",
                    )
                )

    say()
    say("## Targets")
    say()
    say("| target | measured | verdict |")
    say("|---|---:|---|")
    for label, ok, measured in targets:
        say(f"| {label} | {measured} | {verdict(ok)} |")
    elapsed = time.time() - started
    load = os.getloadavg()[0]
    header = [
        "# Benchmark results",
        "",
        f"Written by `make bench{' RECORD=1' if options.record else ''}` "
        f"(`.venv/bin/python bench/run.py{' --record' if options.record else ''}`) on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f} at the end. "
        "The machine is shared: compare the ratios, not the absolute times.",
        "",
        f"Versions: {versions(runtime)}.",
        "",
        f"Lambda-like site-packages ({RUNTIME.relative_to(ROOT)}): {', '.join(runtime)}.",
        "",
    ]
    if not options.quick:
        written = RECORDED if options.record else RESULTS
        written.write_text("\n".join(header + lines) + "\n")
        print(f"Results written to {written.relative_to(ROOT)}", flush=True)
    failed = [label for label, ok, _ in targets if not ok]
    print(f"\n{len(targets) - len(failed)}/{len(targets)} targets PASS in {elapsed:.0f} s", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
