"""Structured JSON logs, one logger created once per execution environment.

The lines have the shape and keys of Powertools' Logger (level, location, message,
timestamp, service, cold_start, function_*, correlation_id, xray_trace_id), so log
queries written for Powertools keep working. It is not Powertools' Logger itself: the
smallest import of that (``aws_lambda_powertools.logging``) runs the package's
``__init__``, which also imports Metrics, the Tracer module, jmespath and inspect. That
was a third of the function's cold import, for features the broker never uses
(see bench/results.md). This logger needs only ``logging`` and ``json``, which urllib3
has already imported.

Service name and level come from the POWERTOOLS_* variables, as before. Nothing secret is
ever passed to the logger: log calls name what happened, never a value the user, the
secret or the upstream supplied. Events are never logged (there is no switch for it).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

# Powertools' correlation_paths.API_GATEWAY_REST: the REST API's request id.
API_GATEWAY_REST = "requestContext.requestId"

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

Handler = TypeVar("Handler", bound=Callable[..., Any])


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with Powertools' default keys in Powertools' order."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.keys: dict[str, Any] = {"service": service}
        self._second = -1
        self._date = ""
        self._zone = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # Powertools' default: '2021-05-03 10:20:19,650+0200'; strftime once a second, not per line.
        second = int(record.created)
        if second != self._second:
            moment = self.converter(record.created)
            self._second = second
            self._date, self._zone = time.strftime("%Y-%m-%d %H:%M:%S", moment), time.strftime("%z", moment)
        return f"{self._date},{int(record.msecs):03d}{self._zone}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
            "timestamp": self.formatTime(record),
            **self.keys,
        }
        line.update((key, value) for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES)
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = self.formatException(record.exc_info)
            line["exception_name"] = record.exc_info[0].__name__
        trace = os.environ.get("_X_AMZN_TRACE_ID")  # set by the runtime for each invocation
        if trace:
            line["xray_trace_id"] = trace.split(";")[0].replace("Root=", "")
        return json.dumps({k: v for k, v in line.items() if v is not None}, default=str, separators=(",", ":"))


class Logger(logging.Logger):
    """A stdlib logger writing JSON lines to stdout, with Lambda context and correlation id."""

    def __init__(self, service: str | None = None, level: str | int | None = None) -> None:
        service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or "service_undefined"
        level = level or os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "INFO"
        super().__init__(service, level.upper() if isinstance(level, str) else level)
        self.propagate = False
        self.registered_formatter = JsonFormatter(service)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(self.registered_formatter)
        self.addHandler(handler)
        self._cold_start = True

    @property
    def log_level(self) -> int:
        return self.level

    def append_keys(self, **keys: Any) -> None:
        self.registered_formatter.keys.update(keys)

    def remove_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.registered_formatter.keys.pop(key, None)

    def inject_lambda_context(self, *, correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
        """Add cold_start, the Lambda context fields and the correlation id to every line."""
        path = tuple(correlation_id_path.split(".")) if correlation_id_path else ()

        def decorate(handler: Handler) -> Handler:
            @functools.wraps(handler)
            def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
                self.append_keys(
                    cold_start=self._cold_start,
                    function_name=context.function_name,
                    function_memory_size=context.memory_limit_in_mb,
                    function_arn=context.invoked_function_arn,
                    function_request_id=context.aws_request_id,
                    correlation_id=_lookup(event, path) if path else None,
                )
                self._cold_start = False
                return handler(event, context, *args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate


def _lookup(document: Any, path: tuple[str, ...]) -> Any:
    """A dotted path into nested objects; None where any step is missing (as jmespath)."""
    for key in path:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


logger = Logger()

# botocore logs whole responses (GetSecretValue's included) at DEBUG and urllib3 is chatty;
# neither may ever emit a secret, whatever level a user sets for the broker's own logger.
for _name in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.INFO)
