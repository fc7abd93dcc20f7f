"""``python -m local.runner``: the broker on http://127.0.0.1:3000 the way Lambda runs it, without Docker."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from local.runner.emulator import EmulatorPool, lambda_environment
from local.runner.logs import LogSink
from local.runner.server import BrokerServer
from local.runner.services import DEMO_PASSWORD, DEMO_USERNAME, REPO_ROOT
from local.runner.stack import Stack, configure, local_stack, read_secret_file
from local.runner.template import App, TemplateError, load_app

BUILT_TEMPLATE = REPO_ROOT / ".aws-sam" / "build" / "template.yaml"
ORIGINS_VARIABLE = "BROKER_ALLOWED_ORIGINS"
DELIVERY_VARIABLE = "BROKER_REFRESH_DELIVERY"
FLOWS_VARIABLE = "BROKER_LOGIN_FLOWS"
REDIRECT_VARIABLE = "BROKER_REDIRECT_URI"


@dataclass(frozen=True)
class Options:
    port: int
    max_concurrency: int
    profile: str | None
    secret_file: Path | None
    env: dict[str, str]
    parameter_overrides: dict[str, str]
    build: bool
    template: Path
    log_file: Path | None
    state_dir: Path | None


def key_values(items: Sequence[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{option} takes KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m local.runner", description=__doc__)
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port (default 3000)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="warm emulators per function (default 4)")
    parser.add_argument("--profile", help="upstream profile (preset name or JSON); default: the local upstream")
    parser.add_argument("--secret-file", type=Path, help="JSON object stored as the secret (default: demo)")
    parser.add_argument("--env", nargs="+", action="extend", metavar="KEY=VALUE", help="set in every function")
    parser.add_argument(
        "--origins",
        metavar="ORIGIN[,ORIGIN...]",
        help=f"the SPA origins allowed ({ORIGINS_VARIABLE} of every function, in place of the template's); "
        "the demo SPA's own origin is always allowed too",
    )
    parser.add_argument("--parameter-overrides", nargs="+", action="extend", metavar="KEY=VALUE")
    parser.add_argument("--no-build", dest="build", action="store_false", help="skip `sam build --cached`")
    parser.add_argument("--template", type=Path, default=BUILT_TEMPLATE, help="the built template to serve")
    parser.add_argument("--log-file", type=Path, help="also append every log line here")
    parser.add_argument("--state-dir", type=Path, help="the local upstream's database (default: a temp dir)")
    args = parser.parse_args(argv)
    env = key_values(args.env, "--env")
    if args.origins is not None:
        if ORIGINS_VARIABLE in env:
            raise SystemExit(f"give --origins or --env {ORIGINS_VARIABLE}=..., not both")
        env[ORIGINS_VARIABLE] = ",".join(parse_origins(args.origins))
    return Options(
        port=args.port,
        max_concurrency=args.max_concurrency,
        profile=args.profile,
        secret_file=args.secret_file,
        env=env,
        parameter_overrides=key_values(args.parameter_overrides, "--parameter-overrides"),
        build=args.build,
        template=args.template,
        log_file=args.log_file,
        state_dir=args.state_dir,
    )


def parse_origins(text: str) -> list[str]:
    """``--origins``: exact origins, comma-separated; checked here, since the functions would only
    fail their init (every request a 502) on a value the broker's configuration refuses."""
    origins: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        origin = item.rstrip("/")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment:
            raise SystemExit(f"--origins takes origins like http://localhost:5173, got {item!r}")
        origins.append(origin)
    return list(dict.fromkeys(origins))


def sam_build() -> None:
    """``sam build --cached``; the venv's bin first, so SAM's python3.13 workflow finds python3.13."""
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", "SAM_CLI_TELEMETRY": "0"}
    subprocess.run([str(venv_bin / "sam"), "build", "--cached"], cwd=REPO_ROOT, env=env, check=True, stdout=sys.stderr)


class Stopping(Exception):
    """SIGINT or SIGTERM: unwind, stopping everything on the way out."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for ignored in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ignored, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
    raise Stopping


def load(options: Options) -> App:
    if options.build:
        sam_build()
    return load_app(options.template, options.parameter_overrides)


def refresh_delivery(environment: Mapping[str, str]) -> str:
    """What the broker's configuration makes of ``BROKER_REFRESH_DELIVERY`` (empty: body)."""
    return environment.get(DELIVERY_VARIABLE, "").strip().lower() or "body"


def allowed_origins(environment: Mapping[str, str]) -> list[str]:
    return [o for o in environment.get(ORIGINS_VARIABLE, "").split(",") if o]


def per_function(values: Mapping[str, str]) -> str:
    """One value when every function has it, else each function's."""
    if len(set(values.values())) <= 1:
        return next(iter(values.values()), "-")
    return "; ".join(f"{name}: {value}" for name, value in values.items())


def spa_delivery(app: App, environments: Mapping[str, Mapping[str, str]]) -> str:
    """The mode the demo SPA is written for: that of the function behind POST /auth/login,
    which decides whether the refresh token reaches JavaScript."""
    found = app.route_for("POST", "/auth/login")
    login = environments.get(found[0].function) if found else None
    return refresh_delivery(login or {})


def banner(url: str, stack: Stack, api_key: str, environments: Mapping[str, Mapping[str, str]]) -> str:
    lines = [f"Token broker running at {url} (Ctrl-C stops it)", "Routes:"]
    for route in stack.app.routes:
        guard = {"AWS_IAM": "  [SigV4: local credentials testing/testing]", "API_KEY": f"  [x-api-key: {api_key}]"}
        lines.append(f"  {route.method:<8} {url}{route.path}  -> {route.function}{guard.get(route.auth, '')}")
    if any(route.auth == "AWS_IAM" for route in stack.app.routes):
        lines.append(
            f"  signed call: curl -s -XPOST {url}/auth/exchange --aws-sigv4 aws:amz:us-east-1:execute-api "
            "--user testing:testing"
        )
    lines.append(f"Secrets Manager (moto): {stack.moto_url}  secret(s): {', '.join(stack.secret_ids) or '-'}")
    if stack.upstream_url:
        lines.append(f"Upstream (django-oauth-toolkit): {stack.upstream_url}")
        lines.append(f"Demo user: {DEMO_USERNAME} / {DEMO_PASSWORD}")
        login = json.dumps({"username": DEMO_USERNAME, "password": DEMO_PASSWORD}, separators=(",", ":"))
        lines.append("Log in:")
        lines.append(f"  curl -s -XPOST {url}/auth/login -H 'content-type: application/json' -d '{login}'")
    else:
        profile = {f.environment.get("BROKER_PROFILE") for f in stack.app.functions.values()}
        lines.append(f"Upstream profile: {', '.join(sorted(p for p in profile if p))}")
    origins = {name: ", ".join(allowed_origins(env)) or "(none)" for name, env in environments.items()}
    lines.append(f"Allowed origins (CORS, Origin check): {per_function(origins)}")
    deliveries = {name: refresh_delivery(env) for name, env in environments.items()}
    lines.append(f"Refresh token delivery: {per_function(deliveries)}")
    mode = spa_delivery(stack.app, environments)
    how = "BFF: an HttpOnly cookie" if mode == "cookie" else "the refresh token in the JSON; DELIVERY=cookie for BFF"
    lines.append(f"Demo SPA: {url}/  ({mode} mode: {how})")
    return "\n".join(lines)


def same_site_origins(url: str) -> list[str]:
    port = url.rsplit(":", 1)[1]
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


def code_flow(app: App) -> bool:
    """Whether any function runs the authorization code flow (the local upstream then speaks OIDC)."""
    return any("code" in f.environment.get(FLOWS_VARIABLE, "").split(",") for f in app.functions.values())


def serve(options: Options, sink: LogSink) -> None:
    app, needs_upstream = configure(load(options), profile=options.profile, env=options.env)
    secret = read_secret_file(options.secret_file)
    oidc = code_flow(app)
    with local_stack(
        app, sink, secret=secret, needs_upstream=needs_upstream, state_dir=options.state_dir, oidc=oidc
    ) as stack:
        for name, reason in stack.app.skipped.items():
            sink.line("runner", f"{name} skipped: {reason}")
        for function in stack.app.functions.values():
            for layer in function.remote_layers:
                sink.line("runner", f"{function.name}: layer {layer} is not available locally, skipped")
        environments = {
            name: lambda_environment(function, stack.services_env) for name, function in stack.app.functions.items()
        }
        server = BrokerServer(options.port, stack.app, {}, sink, spa_delivery(stack.app, environments), oidc)
        # The runner serves the demo SPA itself (GET /), so its own origin is an allowed one.
        own_origins = same_site_origins(server.url)
        for name, function in stack.app.functions.items():
            environment = environments[name]
            environment[ORIGINS_VARIABLE] = ",".join(dict.fromkeys([*allowed_origins(environment), *own_origins]))
            if oidc and not environment.get(REDIRECT_VARIABLE):
                # The events name the stage in their path; the runner serves at the root.
                environment[REDIRECT_VARIABLE] = f"{server.url}/auth/callback"
            server.pools[name] = EmulatorPool(function, environment, stack.supervisor, sink, options.max_concurrency)
        pools = server.pools
        thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        thread.start()
        try:
            print(banner(server.url, stack, server.api_key, environments), flush=True)
            ready = {
                "ready": True,
                "url": server.url,
                "moto_url": stack.moto_url,
                "upstream_url": stack.upstream_url,
                "secret_ids": stack.secret_ids,
                "routes": [{"method": r.method, "path": r.path, "function": r.function} for r in stack.app.routes],
                "pid": os.getpid(),
                "api_key": server.api_key,
            }
            print(json.dumps(ready), flush=True)
            while True:
                time.sleep(3600)  # until a signal raises Stopping
        finally:
            sink.line("runner", "stopping")
            server.shutdown()
            server.server_close()
            for pool in pools.values():
                pool.close()


def main(argv: Sequence[str]) -> int:
    options = parse_options(argv)
    sink = LogSink(log_file=options.log_file)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        serve(options, sink)
    except Stopping:
        return 0
    except (TemplateError, ValueError, OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        sink.line("runner", f"error: {exc}")
        return 1
    finally:
        sink.line("runner", "stopped")
        sink.close()
    return 0
