"""POST /auth/logout - RFC 7009 revocation of the refresh token, and the refresh cookie cleared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.grants import LOGOUT
from broker.handler import broker_for
from broker.observability import correlation_id, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

broker = broker_for(LOGOUT)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.set_correlation_id(correlation_id(event))  # requestContext.requestId (API_GATEWAY_REST)
    return broker.handle(event)
