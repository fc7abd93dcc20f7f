"""The one request pipeline every route follows.

parse the event -> check origin and method -> CSRF in cookie mode -> validate the parameters
-> the grant (read the secret, call the upstream, once more with a re-read secret if it
rejects the broker's own credentials) -> RFC 6749 response.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from broker.answers import interpret
from broker.config import Config
from broker.errors import (
    BrokerError,
    CallerRejected,
    ClientRejected,
    CsrfRejected,
    InvalidRequest,
    OriginNotAllowed,
    RouteOff,
)
from broker.http import Cors, Request, error_response, json_response, parse_event, preflight_response
from broker.observability import logger, request_finished
from broker.secrets import BrokerSecret, SecretStore, fetcher_for
from broker.upstream import send

if TYPE_CHECKING:
    from broker.cookies import CookieJar
    from broker.grants.base import Grant, Reply, Tokens
    from broker.guards import GuardKeys, Guards
    from broker.profiles import Profile


class TokenBroker:
    """Serves one route with its grant. Created once per execution environment, at cold start."""

    def __init__(self, grant: Grant, config: Config, secrets: SecretStore | None = None) -> None:
        self.grant = grant
        self.config = config
        if grant.flow is None or grant.flow in config.login_flows:  # a route that is off only answers 404
            grant.check_profile(config.profile)
        grant.validate  # noqa: B018 - load this route's compiled schema now, in the init phase
        self.cors = Cors(config.allowed_origins, credentials=config.cookie_mode)
        required = set(grant.secret_keys(config.profile))
        if config.cookie_mode and grant.uses_refresh_cookie:
            required.add("broker_keys")
        self.secrets = secrets or SecretStore(
            config.secret_id, config.secret_ttl, tuple(sorted(required)), fetcher_for(config)
        )
        self.guards: Guards | None = grant.make_guards(config)

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        request: Request | None = None
        started = time.perf_counter()
        try:
            request = parse_event(event)
            preflight = self._admit(request)
            if preflight is not None:
                return preflight
            reply = self._serve(request)
        except BrokerError as exc:
            cookies: tuple[str, ...] = ()
            if self.config.cookie_mode and isinstance(exc, CallerRejected) and exc.error == "invalid_grant":
                cookies = (self.cleared_cookie(),)  # the refresh token is dead: drop the cookie too
            self._log(exc.status, exc.error, started)
            return error_response(exc, request, self.cors, cookies)
        except Exception:
            # A bug, not a user error. The traceback names code, never request values.
            logger.exception("Unexpected failure")
            self._log(BrokerError.status, BrokerError.error, started)
            return error_response(BrokerError(), request, self.cors)
        self._log(reply.status, None, started)
        if reply.location is not None:
            from broker.navigation import redirect_response  # noqa: PLC0415 - code-flow routes only

            return redirect_response(reply.location, reply.cookies)
        return json_response(reply.status, reply.body, request, self.cors, cookies=reply.cookies)

    def _admit(self, request: Request) -> dict[str, Any] | None:
        """Refuse what the route does not serve; the preflight's answer for an OPTIONS."""
        if self.grant.flow is not None and self.grant.flow not in self.config.login_flows:
            raise RouteOff()
        if request.origin is not None and request.origin not in self.cors.origins:
            raise OriginNotAllowed()
        if request.method == "OPTIONS":
            return preflight_response(request, self.cors, self.grant.methods)
        if request.method not in self.grant.methods:
            raise InvalidRequest(f"Only {' and '.join(self.grant.methods)} is supported on this route.")
        return None

    def _serve(self, request: Request) -> Reply:
        if self.config.cookie_mode and self.grant.csrf_protected:
            check_csrf(request)
        params = self.grant.check(self.grant.read_params(request))
        return self.grant.serve(self, request, params)

    # -- what grants use --------------------------------------------------------------------

    def call(self, grant: Grant, params: Mapping[str, str], profile: Profile | None = None) -> Tokens:
        """The grant's upstream call; once more with a re-read secret if the upstream rejects ours.

        ``profile``: the configured one with the endpoints discovery found (the code flow)."""
        profile = profile or self.config.profile
        secret = self.secrets.get()
        try:
            return self._once(grant, params, secret, profile)
        except ClientRejected:
            fresh = self.secrets.get(force=True)
            if fresh == secret:
                logger.error("Upstream rejected the broker's credentials; the secret is unchanged")
                raise
            logger.warning("Upstream rejected the broker's credentials; retrying once with the re-read secret")
            try:
                return self._once(grant, params, fresh, profile)
            except ClientRejected:
                logger.error("Upstream rejected the broker's credentials again after a fresh secret read")
                raise

    def _once(self, grant: Grant, params: Mapping[str, str], secret: BrokerSecret, profile: Profile) -> Tokens:
        request = grant.upstream_request(params, secret, profile)
        answer = send(request, self.config.upstream_timeout)
        return interpret(answer, profile, request.sensitive)

    def guard_keys(self, guards: Guards) -> GuardKeys | None:
        return guards.keys_for(self.secrets.get())

    def cookie_token(self, request: Request) -> str:
        """The refresh token sealed in the request's cookie (cookie mode)."""
        return self.cookie_session(request)[0]

    def cookie_session(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The refresh token and the session's claims sealed in the request's cookie (cookie mode)."""
        from broker.cookies import read_cookie  # noqa: PLC0415 - cookie mode only

        value = read_cookie(request.headers, list(request.cookie_headers))
        if value is None:
            raise InvalidRequest("The refresh cookie is missing; sign in again.")
        return self.jar().open_session(value)

    def refresh_cookie(self, refresh_token: str, claims: Mapping[str, Any] | None = None) -> str:
        """The Set-Cookie value that seals ``refresh_token`` (and the session's claims)."""
        return self.jar().set_cookie(refresh_token, claims)

    def cleared_cookie(self) -> str:
        from broker.cookies import clear_cookie  # noqa: PLC0415 - cookie mode only

        return clear_cookie()

    def jar(self) -> CookieJar:
        from broker.cookies import CookieJar, parse_keys  # noqa: PLC0415 - cookie mode only

        keys = parse_keys(self.secrets.get().values.get("broker_keys", ""))
        return CookieJar(keys, self.config.deployment_id, self.config.cookie_max_age)

    def _log(self, status: int, error: str | None, started: float) -> None:
        duration = round((time.perf_counter() - started) * 1000, 2)
        request_finished(self.grant.name, status, error, duration)  # the log line and the request's metrics


def check_csrf(request: Request) -> None:
    """Cookie mode: a custom header forces a CORS preflight, and the Origin must be listed."""
    if request.headers.get("x-csrf") != "1":
        raise CsrfRejected("The X-CSRF: 1 header is required.")
    # Browsers omit Origin on a same-origin GET; a cross-origin one carrying X-CSRF always has it
    # (its preflight does too), and the origin check above has already refused an unlisted one.
    if request.origin is None and request.method != "GET":
        raise CsrfRejected("An allowed Origin header is required.")


def broker_for(grant: Grant) -> TokenBroker:
    """A function's broker: the configuration read once, at cold start (an invalid one fails the init)."""
    return TokenBroker(grant, Config.from_env())
