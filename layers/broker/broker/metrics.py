"""CloudWatch metrics for the rare events operators alert on, in Embedded Metric Format.

Powertools' metrics module is imported on first use only: these events are failures,
so the warm success path and the cold start never pay for it.
"""

from __future__ import annotations

import os


def metrics_count(name: str) -> None:
    """Emit one count of ``name`` (an EMF line on stdout, which Lambda ships to CloudWatch)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric  # noqa: PLC0415 - failure path only

    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=namespace) as metric:
        metric.add_dimension(name="service", value=os.environ.get("POWERTOOLS_SERVICE_NAME", "token-broker"))
