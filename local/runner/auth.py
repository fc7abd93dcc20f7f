"""What API Gateway checks before a function runs: SigV4 (AWS_IAM) or an API key.

Locally the only IAM principal is the local one (the same fake credentials the functions
use against moto), and the API key is made per run and printed in the banner. A request
that fails the check never reaches the function, as in API Gateway.
"""

from __future__ import annotations

import hmac
import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.runner.events import MISSING_TOKEN, HttpRequest, HttpResponse
from local.runner.template import REGION

LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY = "testing", "testing"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<signature>[0-9a-f]{64})$"
)
BAD_SIGNATURE = HttpResponse.message(
    403,
    "The request signature we calculated does not match the signature you provided.",
    "InvalidSignatureException",
    "INVALID_SIGNATURE",
)
FORBIDDEN = HttpResponse.message(403, "Forbidden", "ForbiddenException", "INVALID_API_KEY")


def check(auth: str, request: HttpRequest, api_key: str) -> HttpResponse | None:
    """None when the caller may go on; API Gateway's 403 otherwise."""
    headers = {name.lower(): value for name, value in request.headers}
    if auth == "API_KEY":
        return None if hmac.compare_digest(headers.get("x-api-key", ""), api_key) else FORBIDDEN
    if auth != "AWS_IAM":
        return None
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    if match is None or "x-amz-date" not in headers:
        return MISSING_TOKEN
    if (match["key"], match["region"], match["service"]) != (LOCAL_ACCESS_KEY, REGION, "execute-api"):
        return BAD_SIGNATURE
    signed = match["signed"].split(";")
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{request.host}{request.target}",
        data=request.body,
        headers={name: headers.get(name, "") for name in signed},
    )
    aws_request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY), "execute-api", REGION)
    expected = signer.signature(signer.string_to_sign(aws_request, signer.canonical_request(aws_request)), aws_request)
    return None if hmac.compare_digest(expected, match["signature"]) else BAD_SIGNATURE
