"""The Powertools logger, created once per execution environment.

Only ``aws_lambda_powertools.logging`` is imported: no Tracer is created (so ``aws_xray_sdk``
is never loaded) and no utility module is pulled in (see tests/unit/test_imports.py). The
service name and level come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_LOG_LEVEL.

Nothing secret is ever passed to the logger: log calls name what happened, never a value
the user, the secret or the upstream supplied. Events are never logged: the handlers pass
``log_event=False``, which overrides POWERTOOLS_LOGGER_LOG_EVENT.

Every invocation writes one line, so its cost is part of the warm overhead (bench/run.py):
- the JSON encoder is built once (Powertools' default, ``functools.partial(json.dumps, …)``
  with options, builds one per line), same options, same output;
- a message is JSON-decoded only when it looks like JSON: Powertools otherwise runs a failing
  ``json.loads`` on each plain-text message;
- the stdlib does not compute thread, process and task names that no line carries;
- the correlation id is read with two dict lookups (``correlation_id``) instead of a JMESPath
  search per call (``correlation_id_path``), with the same result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import powertools_dev_is_set


def _json_message(message: Any) -> Any:
    """Powertools' message decoding, for messages that can hold a JSON object or array."""
    if isinstance(message, str) and message.lstrip()[:1] not in ("{", "["):
        return message
    return json.loads(message)


_INDENT = constants.PRETTY_INDENT if powertools_dev_is_set() else constants.COMPACT_INDENT

logger = Logger(
    json_serializer=json.JSONEncoder(default=str, separators=(",", ":"), indent=_INDENT, ensure_ascii=False).encode,
    json_deserializer=_json_message,
)

# LogRecord fields no line carries (Powertools' JSON drops thread, process and task names):
# the stdlib's documented switches stop computing them for every record.
logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+, not yet in typeshed

# botocore logs whole responses (GetSecretValue's included) at DEBUG and urllib3 is chatty;
# neither may ever emit a secret, whatever level a user sets for the broker's own logger.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)


def correlation_id(event: Any) -> Any:
    """The API Gateway request id, as ``correlation_paths.API_GATEWAY_REST`` finds it (None if absent)."""
    try:
        return event["requestContext"]["requestId"]
    except (KeyError, TypeError, IndexError):
        return None
