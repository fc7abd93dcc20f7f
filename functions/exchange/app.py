"""POST /auth/exchange - machine-to-machine token exchange."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from broker.grants import EXCHANGE
from broker.handler import broker_for
from broker.observability import logger

broker = broker_for(EXCHANGE)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return broker.handle(event)
