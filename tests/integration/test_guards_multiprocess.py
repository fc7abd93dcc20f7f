"""The guards hold across processes, as they must across Lambda instances.

One moto server is the DynamoDB table, one threaded HTTP server in this process is the
upstream and counts its calls, and several separate Python processes, each with its own
``Guards`` and DynamoDB client, run the broker's paths against them at the same moment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests

from tests.support import ROOT

pytestmark = pytest.mark.integration

WINDOW = 900
REFRESH_TOKEN = "demo-refresh-token"
WRONG = "not-the-password"
BROKER_KEYS = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"

# moto's server, single-threaded. DynamoDB applies a conditional write to an item atomically;
# moto's backend checks the condition and writes without a lock, so on its threaded server two
# requests can both pass one condition. One request at a time restores DynamoDB's guarantee;
# the worker processes still race each other to the table.
MOTO = """
import runpy, sys, werkzeug.serving
threaded_run = werkzeug.serving.run_simple
def serial_run(*args, **kwargs):
    kwargs["threaded"] = False
    return threaded_run(*args, **kwargs)
werkzeug.serving.run_simple = serial_run
sys.argv = ["moto.server", *sys.argv[1:]]
runpy.run_module("moto.server", run_name="__main__", alter_sys=True)
"""

# One worker process: builds its own Guards, says "ready", waits for "go" on stdin, then runs
# its jobs on threads and prints what each one got.
WORKER = """
import json, sys, threading, time, urllib.error, urllib.request
from types import MappingProxyType
from broker.errors import BrokerError, CallerRejected
from broker.guards import GuardKeys, Guards, dynamodb_client
from broker.secrets import BrokerSecret

spec = json.loads(sys.argv[1])
epoch, base = spec["epoch"], spec["base"]
# A single-threaded moto on a busy test machine is slower than DynamoDB: a longer timeout keeps
# this test about atomicity across processes (the short default is tested in the unit tests).
guards = Guards(spec["table"], max_failures=5, max_failures_per_ip=50, grace=30,
                client=dynamodb_client(timeout=5.0), clock=lambda: epoch + (time.time() - base))
keys = GuardKeys.from_secret(BrokerSecret(MappingProxyType({"broker_keys": spec["broker_keys"]})))

def post(path, body):
    request = urllib.request.Request(spec["upstream"] + path, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise CallerRejected(json.loads(exc.read())["error"], "Rejected by the upstream.") from None

def run(jobs, results):
    go.wait()
    for job in jobs:
        try:
            if job["kind"] == "refresh":
                outcome = guards.single_flight(job["token"], keys, lambda: post("/refresh", {}))
            else:
                call = lambda job=job: post("/login", {"username": job["username"]})
                outcome = guards.login(job["username"], job["ip"], keys, call)
            results.append({"tokens": outcome})
        except BrokerError as exc:
            results.append({"status": exc.status, "error": exc.error})

go = threading.Event()
results = []
threads = [threading.Thread(target=run, args=(jobs, results)) for jobs in spec["threads"]]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for thread in threads:
    thread.join()
print(json.dumps({"pid": __import__("os").getpid(), "results": results}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", MOTO, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert server.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode is not None  # no moto server left behind


def dynamodb(moto_url: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def table(moto_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh table, created over HTTP as the template would create it."""
    name = f"state-{request.node.name[:40]}-{os.getpid()}".replace("[", "-").replace("]", "")
    client = dynamodb(moto_url)
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    return name


@dataclass
class CountingUpstream:
    """The token endpoint: every refresh takes 300 ms and issues new tokens; every login fails."""

    url: str = ""
    refreshes: int = 0
    logins: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def upstream() -> Iterator[CountingUpstream]:
    state = CountingUpstream()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/refresh":
                with state.lock:
                    state.refreshes += 1
                    number = state.refreshes
                time.sleep(0.3)  # long enough for every twin to arrive while the claimant waits
                self.answer(200, {"access_token": f"at-{number}", "refresh_token": f"rt-{number}", "expires_in": 60})
            else:
                with state.lock:
                    state.logins[body["username"]] += 1
                self.answer(400, {"error": "invalid_grant"})

        def answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_workers(
    moto_url: str, table: str, upstream: CountingUpstream, plans: list[list[list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """One process per plan (a list of threads, each a list of jobs), all released at once."""
    base = time.time()
    # A window that starts just now in the workers' shared clock: no test straddles a window edge.
    epoch = (int(base) // WINDOW + 100) * WINDOW + 1
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BROKER_"))},
        "PYTHONPATH": str(ROOT / "layers" / "broker"),
        "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    workers = []
    for threads in plans:
        spec = {
            "table": table,
            "upstream": upstream.url,
            "broker_keys": BROKER_KEYS,
            "epoch": epoch,
            "base": base,
            "threads": threads,
        }
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(spec)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read() if worker.stderr else ""
        for worker in workers:  # "go": every process starts its threads within a few milliseconds
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
            *logs, last = out.strip().splitlines()
            # The guards log (never a value) when they could not use the table: none here.
            assert [line for line in logs if "Guards table unavailable" in line] == []
            reports.append(json.loads(last))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert len({report["pid"] for report in reports}) == len(plans)
    return reports


def test_ten_refreshes_across_four_processes_make_one_upstream_call(
    moto_url: str, table: str, upstream: CountingUpstream
) -> None:
    # Given four processes with 3, 3, 2 and 2 threads, each about to refresh the same token
    job = {"kind": "refresh", "token": REFRESH_TOKEN}
    plans = [[[job]] * threads for threads in (3, 3, 2, 2)]
    # When they are released at the same moment
    reports = run_workers(moto_url, table, upstream, plans)
    # Then the upstream was called once, and all ten got its tokens
    results = [result for report in reports for result in report["results"]]
    assert upstream.refreshes == 1
    assert len(results) == 10
    assert all(
        result == {"tokens": {"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 60}} for result in results
    )


def test_failed_logins_add_up_across_processes(moto_url: str, table: str, upstream: CountingUpstream) -> None:
    # Given four processes, four threads each, three wrong passwords per thread for one username,
    # every process from its own IP
    plans = [
        [[{"kind": "login", "username": "alice@example.com", "ip": f"198.51.100.{p}"}] * 3 for _ in range(4)]
        for p in range(4)
    ]
    # When they all run at once
    reports = run_workers(moto_url, table, upstream, plans)
    # Then exactly five reached the upstream and the other 43 were refused with 429
    outcomes = Counter(result.get("status") for report in reports for result in report["results"])
    assert upstream.logins == Counter({"alice@example.com": 5})
    assert outcomes == Counter({400: 5, 429: 43})


def test_failures_from_one_ip_add_up_across_processes(moto_url: str, table: str, upstream: CountingUpstream) -> None:
    # Given four processes, four threads each, five logins per thread, every one for a different
    # username but all from one IP (password spraying)
    plans = [
        [[{"kind": "login", "username": f"user-{p}-{t}-{n}", "ip": "203.0.113.7"} for n in range(5)] for t in range(4)]
        for p in range(4)
    ]
    # When they all run at once
    reports = run_workers(moto_url, table, upstream, plans)
    # Then the IP's 50 failures reached the upstream, the other 30 were refused
    outcomes = Counter(result.get("status") for report in reports for result in report["results"])
    assert sum(upstream.logins.values()) == 50
    assert outcomes == Counter({400: 50, 429: 30})
    # And the table's counter for that IP says 50
    items = dynamodb(moto_url).scan(TableName=table, ConsistentRead=True)["Items"]
    assert [len(item["attempts"]["SS"]) for item in items if item["pk"]["S"].startswith("login#ip#")] == [50]
