"""Logging and metrics, created once per execution environment.

Powertools' stock ``Logger``: JSON lines with the Lambda context (``inject_lambda_context``) and
the API Gateway request id as correlation id; service and level from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_LOG_LEVEL. No Tracer is created, so the X-Ray SDK is never loaded.

Powertools' ``Metrics`` in CloudWatch Embedded Metric Format: metrics are lines on stdout that
Lambda ships to CloudWatch Logs, which turns them into metrics; no API call is ever made. The
namespace comes from POWERTOOLS_METRICS_NAMESPACE, the ``service`` dimension from
POWERTOOLS_SERVICE_NAME (the stack's name, so two stacks in one account never mix). Importing
them costs nothing more: ``aws_lambda_powertools`` loads its metrics module with the Logger.
The metric names are listed in docs/deploy.md (Monitoring); the template's alarms and dashboard use them.

Nothing secret is ever passed to the logger or a metric: they name what happened, never a value
the user, the secret or the upstream supplied. Events are never logged (``log_event=False``,
which overrides POWERTOOLS_LOGGER_LOG_EVENT).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit, SchemaValidationError, single_metric

logger = Logger()
metrics = Metrics()

# botocore logs whole responses (GetSecretValue's included) at DEBUG and urllib3 is chatty;
# neither may ever emit a secret, whatever level a user sets for the broker's own logger.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)

# Counted once per request in the totals (dimension ``service`` only), by the answer's status.
_STATUS_COUNTS = {502: "UpstreamFailures", 504: "UpstreamTimeouts"}


class _Upstream:
    """The current request's upstream time (one request at a time per execution environment)."""

    milliseconds: float | None = None


def upstream_timed(seconds: float) -> None:
    """Called by ``broker.upstream.send`` after each upstream call; reported with the request."""
    _Upstream.milliseconds = seconds * 1000


def request_finished(route: str, status: int, error: str | None, duration_ms: float) -> None:
    """The request's one log line, which also carries its metrics (CloudWatch reads the ``_aws`` block).

    Metric ``Requests`` per route and outcome (dimensions ``service``, ``route``,
    ``status_class`` 2xx/4xx/5xx, ``error`` the RFC 6749 code or ``none``), ``UpstreamLatency``
    when the upstream was called, ``UpstreamFailures`` for a 502 and ``UpstreamTimeouts`` for a
    504; each also in the totals (dimension ``service`` only), which the alarms watch. One line,
    not a log line and a metrics line: the warm path writes once.
    """
    fields: dict[str, Any] = {"grant": route, "status": status, "duration_ms": duration_ms}
    if error:
        fields["error"] = error
    upstream_ms, _Upstream.milliseconds = _Upstream.milliseconds, None
    if metrics.namespace:  # no namespace (a run without the template's environment): the log line only
        fields.update(_emf(route, status, error, upstream_ms))
    if status >= 500:
        logger.warning("Token request failed", extra=fields)
    else:
        logger.info("Token request finished", extra=fields)


_DOCUMENTS: dict[tuple[str, int, str | None, bool], dict[str, Any]] = {}


def _emf(route: str, status: int, error: str | None, upstream_ms: float | None) -> dict[str, Any]:
    """The EMF document of one request.

    Powertools builds and validates a document once per route, outcome and shape (a few per
    function); a request then only sets its timestamp and latency in a copy. Building it anew
    each time cost ~30 µs, a tenth of a warm request.
    """
    key = (route, status, error, upstream_ms is not None)
    template = _DOCUMENTS.get(key)
    if template is None:
        metrics.add_dimension(name="route", value=route)
        metrics.add_dimension(name="status_class", value=f"{status // 100}xx")
        metrics.add_dimension(name="error", value=error or "none")
        metrics.add_dimensions(service=metrics.service or logger.service)
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        if upstream_ms is not None:
            metrics.add_metric(name="UpstreamLatency", unit=MetricUnit.Milliseconds, value=0)
        if status in _STATUS_COUNTS:
            metrics.add_metric(name=_STATUS_COUNTS[status], unit=MetricUnit.Count, value=1)
        template = _DOCUMENTS[key] = dict(metrics.serialize_metric_set())
        metrics.clear_metrics()
    document = {**template, "_aws": {**template["_aws"], "Timestamp": int(time.time() * 1000)}}
    if upstream_ms is not None:
        document["UpstreamLatency"] = [round(upstream_ms, 2)]
    return document


def metrics_count(name: str) -> None:
    """One count of ``name`` (dimension ``service``), on its own EMF line: an event within a request.

    ``Lockouts``, ``SingleFlightShares``, ``GuardsUnavailable``, ``RevocationFailed``.
    """
    try:
        with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="service", value=logger.service)
    except SchemaValidationError:
        pass  # no namespace (a run without the template's environment): a metric never fails a request
