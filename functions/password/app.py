"""POST /auth/login - resource owner password credentials grant (RFC 6749 §4.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.grants import PASSWORD
from broker.handler import broker_for
from broker.observability import correlation_id, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

broker = broker_for(PASSWORD)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.set_correlation_id(correlation_id(event))  # requestContext.requestId (API_GATEWAY_REST)
    return broker.handle(event)
