"""The naive alternative: the token proxy a user would otherwise write (the seed's style).

requests, a new boto3 client and a GetSecretValue on every call, no connection pooling, no
caching, no validation. It is the bench's yardstick, never deployed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import requests


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.loads(event.get("body") or "{}")
    client = boto3.client("secretsmanager")
    secret = json.loads(client.get_secret_value(SecretId=os.environ["BROKER_SECRET_ID"])["SecretString"])
    answer = requests.post(
        os.environ["BROKER_TOKEN_URL"],
        data={
            "grant_type": "password",
            "username": body["username"],
            "password": body["password"],
            "client_id": secret["client_id"],
            "client_secret": secret["client_secret"],
        },
        timeout=8,
    )
    return {"statusCode": answer.status_code, "headers": {"Content-Type": "application/json"}, "body": answer.text}
