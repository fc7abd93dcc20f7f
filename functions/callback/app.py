"""GET /auth/callback - the code exchanged, the ID token validated, the session cookie set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths

from broker.grants.callback import CallbackGrant
from broker.observability import logger
from broker.pipeline import broker_for

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

broker = broker_for(CallbackGrant())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return broker.handle(event)
