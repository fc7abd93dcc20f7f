"""Command line, seeding and the threaded loopback WSGI server."""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import socket
import socketserver
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

DB_FILENAME = "upstream.sqlite3"


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    client_id: str
    client_secret: str
    username: str
    password: str
    exchange_token: str
    state_dir: Path | None
    access_token_expire_seconds: int
    quiet: bool
    allowed_host: list[str]
    oidc: bool


def _loopback(value: str) -> str:
    host = "127.0.0.1" if value == "localhost" else value
    try:
        if ipaddress.IPv4Address(host).is_loopback:
            return host
    except ValueError:
        pass
    # The control endpoints are unauthenticated: never listen beyond loopback.
    raise argparse.ArgumentTypeError(f"{value!r} is not an IPv4 loopback address")


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m local.upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    parser.add_argument("--client-id", default="demo-client")
    parser.add_argument("--client-secret", default="demo-client-secret")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--exchange-token", default="demo-exchange-token")
    parser.add_argument("--state-dir", type=Path, help="SQLite lives here (default: a temp dir)")
    parser.add_argument("--access-token-expire-seconds", type=int, default=3600)
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    # A relay on another address (the Docker bridge) forwards its callers' Host header.
    parser.add_argument("--allowed-host", action="append", default=[], help="another Host header to accept")
    parser.add_argument(
        "--oidc",
        action="store_true",
        help="OpenID Connect and the authorization code flow (PKCE, RS256, a login page, RP-initiated logout) "
        "for the seeded client, in place of the password grant",
    )
    return Options(**vars(parser.parse_args(argv)))


class _RequestHandler(WSGIRequestHandler):
    quiet = False

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path (never the query string) and status only.
        if not self.quiet:
            sys.stderr.write(f"{self.command} {self.path.partition('?')[0]} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's other messages: they echo raw request lines."""


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's 5 resets connections under a parallel load test

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]
        self.setup_environ()

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


def _setup_django(options: Options, state_dir: Path) -> Any:
    """Configure Django, migrate, seed, and return the WSGI application."""
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    from local.upstream.settings import build

    settings.configure(
        **build(
            db_path=state_dir / DB_FILENAME,
            host=options.host,
            access_token_expire_seconds=options.access_token_expire_seconds,
            allowed_hosts=options.allowed_host,
            oidc=options.oidc,
        )
    )
    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    _seed(options)
    return get_wsgi_application()


def _seed(options: Options) -> None:
    from django.contrib.auth import get_user_model
    from oauth2_provider.models import get_application_model

    from local.upstream import views

    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=options.username)
    user.set_password(options.password)
    user.save()
    service, _ = user_model.objects.get_or_create(username=views.SERVICE_USERNAME)
    service.set_unusable_password()
    service.save()
    application_model = get_application_model()
    grant = application_model.GRANT_AUTHORIZATION_CODE if options.oidc else application_model.GRANT_PASSWORD
    application_model.objects.update_or_create(
        client_id=options.client_id,
        defaults={
            "name": "demo confidential client",
            "client_type": application_model.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": grant,
            # Plain text here; DOT's ClientSecretField hashes it on save.
            "client_secret": options.client_secret,
            "hash_client_secret": True,
            # The code flow: loopback URIs match on any port (RFC 8252 §7.3), so any local
            # runner's /auth/callback is registered; the demo user is not asked to consent.
            "redirect_uris": "http://127.0.0.1/auth/callback",
            "post_logout_redirect_uris": "http://127.0.0.1/",
            "algorithm": application_model.RS256_ALGORITHM if options.oidc else application_model.NO_ALGORITHM,
            "skip_authorization": True,
        },
    )
    views.runtime.client_id = options.client_id
    views.runtime.exchange_token = options.exchange_token
    views.runtime.access_token_expire_seconds = options.access_token_expire_seconds


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)

    with ExitStack() as cleanup:
        state_dir = options.state_dir
        if state_dir is None:
            state_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="upstream-")))
        state_dir.mkdir(parents=True, exist_ok=True)
        application = _setup_django(options, state_dir)

        _RequestHandler.quiet = options.quiet
        try:
            server = _ThreadingWSGIServer((options.host, options.port), _RequestHandler)
        except OSError as exc:
            print(f"local upstream: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr)
            return 1
        server.set_app(application)
        cleanup.callback(server.server_close)
        # A short poll interval so that shutdown() on SIGTERM returns in ~50 ms, not 0.5 s.
        serve = threading.Thread(target=server.serve_forever, args=(0.05,), name="upstream", daemon=True)
        serve.start()
        cleanup.callback(server.shutdown)  # runs before server_close (LIFO)

        url = f"http://{options.host}:{server.server_address[1]}"
        print(json.dumps({"ready": True, "url": url}), flush=True)
        stop.wait()
    return 0
