"""Logging and metrics, created once per execution environment.

Powertools' stock ``Logger``: JSON lines with the Lambda context (``inject_lambda_context``) and
the API Gateway request id as correlation id; service and level from POWERTOOLS_SERVICE_NAME and
POWERTOOLS_LOG_LEVEL. No Tracer is created, so the X-Ray SDK is never loaded.

Nothing secret is ever passed to the logger: log calls name what happened, never a value the
user, the secret or the upstream supplied. Events are never logged (``log_event=False``, which
overrides POWERTOOLS_LOGGER_LOG_EVENT).
"""

from __future__ import annotations

import logging

from aws_lambda_powertools.logging import Logger

logger = Logger()

# botocore logs whole responses (GetSecretValue's included) at DEBUG and urllib3 is chatty;
# neither may ever emit a secret, whatever level a user sets for the broker's own logger.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)


def metrics_count(name: str) -> None:
    """One count of ``name`` in Embedded Metric Format (a line on stdout that Lambda ships to CloudWatch).

    Powertools' metrics module is imported on first use: these are failure counts, so neither
    the cold start nor the warm success path pays for it. The namespace comes from
    POWERTOOLS_METRICS_NAMESPACE, as for every Powertools metric.
    """
    from aws_lambda_powertools.metrics import MetricUnit, single_metric  # noqa: PLC0415 - failure path only

    with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
        metric.add_dimension(name="service", value=logger.service)
