"""The code flow's browser navigations: query strings in, 302 redirects out.

``/auth/authorize`` and ``/auth/callback`` are top-level GETs the browser follows, not
``fetch`` calls: their parameters are in the query string and their answers are redirects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from broker.errors import InvalidRequest
from broker.http import collect

if TYPE_CHECKING:
    from broker.http import Request

MAX_RETURN_TO = 2048
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def parse_query(request: Request) -> dict[str, str]:
    """The query string's parameters by the body's rules: a repeat is an error, empty is missing."""
    query = request.query if isinstance(request.query, Mapping) else {}
    pairs: list[tuple[str, str]] = []
    for name, raw in query.items():
        for value in raw if isinstance(raw, list) else [raw]:
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidRequest("The query string is malformed.")
            pairs.append((name, value))
    return collect(pairs)


def redirect_response(location: str, cookies: tuple[str, ...] = ()) -> dict[str, Any]:
    """A 302 the browser follows: no body, no CORS (a navigation is not a cross-origin read)."""
    multi = {"Set-Cookie": list(cookies)} if cookies else {}
    headers = {"Location": location, **_NO_STORE}
    return {"statusCode": 302, "headers": headers, "multiValueHeaders": multi, "body": "", "isBase64Encoded": False}


def checked_return_to(url: str | None, origins: frozenset[str]) -> str:
    """``return_to`` must be an absolute URL on an allowed origin; anything else is 400.

    Compared as scheme://host[:port], exactly as the allowed origins are written, after
    refusing what parsers disagree on (backslashes, userinfo, whitespace and control characters)."""
    if not url:
        raise InvalidRequest("Missing required parameter: return_to.")
    if len(url) > MAX_RETURN_TO or "\\" in url or any(not c.isprintable() or c.isspace() for c in url):
        raise InvalidRequest("Parameter 'return_to' is invalid.")
    parts = urlsplit(url)
    if "@" in parts.netloc or f"{parts.scheme}://{parts.netloc}" not in origins:
        raise InvalidRequest("Parameter 'return_to' is not on an allowed origin.")
    return url


def with_params(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to its query string (its own parameters kept)."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))
