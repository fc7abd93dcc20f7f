"""POST /auth/login - resource owner password credentials grant (RFC 6749 §4.3)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from broker.grants import PASSWORD
from broker.handler import broker_for
from broker.observability import logger

broker = broker_for(PASSWORD)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return broker.handle(event)
