"""Logger and metrics, created once per execution environment.

The service name, level and namespace come from the POWERTOOLS_* environment variables.
Nothing secret is ever passed to them: log calls name what happened, never a value the
user, the secret or the upstream supplied.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools.logging import Logger

logger = Logger()

# botocore logs whole responses (GetSecretValue's included) at DEBUG and urllib3 is chatty;
# neither may ever emit a secret, whatever level a user sets for the broker's own logger.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)
