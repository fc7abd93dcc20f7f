"""The Powertools logger, created once per execution environment.

Only ``aws_lambda_powertools.logging`` is imported: no Tracer is created (so ``aws_xray_sdk``
is never loaded) and no utility module is pulled in (see tests/unit/test_imports.py). The
service name and level come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_LOG_LEVEL.

Nothing secret is ever passed to the logger: log calls name what happened, never a value
the user, the secret or the upstream supplied. Events are never logged: the handlers pass
``log_event=False``, which overrides POWERTOOLS_LOGGER_LOG_EVENT.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools.logging import Logger

logger = Logger()

# botocore logs whole responses (GetSecretValue's included) at DEBUG and urllib3 is chatty;
# neither may ever emit a secret, whatever level a user sets for the broker's own logger.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)
