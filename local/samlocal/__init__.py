"""`sam local invoke` and `sam local start-api` against the local stack, in Docker."""
