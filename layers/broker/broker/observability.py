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
  search per call (``correlation_id_path``), with the same result;
- the lines are built by ``BrokerFormatter``, Powertools' "bring your own formatter" hook: the
  stock ``LambdaPowertoolsFormatter.format`` copies each record's ``__dict__``, tests every
  attribute against a 24-item tuple, runs ``time.strftime`` each time and calls exception
  helpers whose answer is None on every ordinary line. ``BrokerFormatter`` writes the same
  bytes with less work; see its docstring (tests/unit/test_log_formatter.py compares the two).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from itertools import takewhile
from typing import Any, Final

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter, _get_context
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import powertools_dev_is_set

from broker.jsontext import compact_encoder

_RESERVED: Final = frozenset(RESERVED_LOG_ATTRS)
# The attributes every LogRecord starts with, in order, up to the first one that is not reserved
# (taskName): a record whose dict starts with them has its extras after them.
_LEADING: Final = list(takewhile(_RESERVED.__contains__, logging.LogRecord("", 0, "", 0, "", None, None).__dict__))
_MS_MARK: Final = "\x01"  # stands for the milliseconds in a cached strftime result: strftime copies it as is

# How a reserved key's template is rendered; stock renders each against a copy of the record's
# dict with "asctime" added. _ASCTIME: the template is "%(asctime)s", its result the timestamp
# itself. _RECORD: every "%" opens a named conversion and none names asctime, so the record's own
# dict gives the same result. _COPY: anything else ("%s" formats the whole mapping; "%%" is rare).
_ASCTIME, _RECORD, _COPY = 0, 1, 2
_TEMPLATE_KIND: dict[str, int] = {}


def _template_kind(template: str) -> int:
    if template == "%(asctime)s":
        kind = _ASCTIME
    elif "%(asctime)" not in template and template.count("%") == template.count("%("):
        kind = _RECORD
    else:
        kind = _COPY
    if len(_TEMPLATE_KIND) < 256:  # templates are a handful of constants: never grow without bound
        _TEMPLATE_KIND[template] = kind
    return kind


def _render(template: Any, attributes: dict[str, Any], asctime: str) -> Any:
    """``template % {**attributes, "asctime": asctime}``, without the copy where it cannot matter."""
    if type(template) is not str:  # a str subclass may define its own ``%``: give it the stock mapping
        if not isinstance(template, str):  # stock raises ValueError (``format`` falls back to it)
            raise TypeError(template)
        return template % {**attributes, "asctime": asctime}
    kind = _TEMPLATE_KIND.get(template)
    if kind is None:
        kind = _template_kind(template)
    if kind == _ASCTIME:
        return asctime
    if kind == _RECORD:
        return template % attributes
    return template % {**attributes, "asctime": asctime}


class BrokerFormatter(LambdaPowertoolsFormatter):
    """``LambdaPowertoolsFormatter`` with the same output, built with less work on the common line.

    ``format`` takes its own path only for a record whose ``msg`` is a str without ``args``,
    with no ``exc_info`` tuple, ``exc_text`` or ``stack_info``; any other record, and any error
    on that path, goes to ``super().format`` (which then formats it, or raises what stock
    raises). On that path:
    - reserved attributes are a frozenset, not a 24-item tuple scanned for each record attribute,
      and the attributes every record starts with (all reserved) are skipped in one comparison;
    - the record's dict is not copied: a template that names only record attributes is rendered
      against the record's own dict, "%(asctime)s" is the timestamp itself; only a template that
      could see the added "asctime" key, or the whole mapping, gets the stock copy;
    - the exception helpers are not called: with no exception they return None, so the stock
      ``exception``/``exception_name``/``exception_notes`` keep an extra's value or are dropped
      as None, which is what not setting them does; ``stack_trace`` is set to None (with
      ``serialize_stacktrace``), as stock does, so an extra of that name is dropped too;
    - keys go in in the stock order (log_format, thread-safe keys, extras, message, stack_trace,
      xray_trace_id) and None values are dropped after, so the keys come out in the stock order.
    ``formatTime`` keeps one ``time.strftime`` result per whole second, converter and time zone
    (default date format only) and puts the milliseconds where stock's "%F" replacement does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (second, converter, time.tzname, the strftime result split where the milliseconds go)
        self._second: tuple[int, Callable[..., Any], Any, tuple[str, ...]] | None = None

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        # stock reads exc_info only when it is a tuple (and then indexes it, even when empty)
        exc_info, args = record.exc_info, record.args
        if isinstance(exc_info, tuple) or record.exc_text or record.stack_info or args or not isinstance(msg, str):
            return super().format(record)
        try:
            log = self._fields(record, msg)
        except Exception:  # stock raises its own error for this record: let it
            return super().format(record)
        return self.json_serializer(log)  # what ``serialize`` does, one call fewer per line

    def _fields(self, record: logging.LogRecord, msg: str) -> dict[str, Any]:  # noqa: PLR0912 - one pass, inlined on purpose
        """What stock ``format`` serializes, for a record with no exception and a plain message."""
        attributes = record.__dict__
        asctime = self.formatTime(record)
        log_format = self.log_format
        fields = dict(log_format)
        for key in _RESERVED.intersection(log_format):
            template = log_format[key]
            if template:  # _render, inlined for the usual templates
                kind = _TEMPLATE_KIND.get(template) if type(template) is str else None
                if kind == _RECORD:
                    fields[key] = template % attributes
                elif kind == _ASCTIME:
                    fields[key] = asctime
                else:
                    fields[key] = _render(template, attributes, asctime)
        context = _get_context().get()
        if context:
            fields.update(context)
            for key in _RESERVED.intersection(context):
                template = context[key]
                if template:
                    fields[key] = _render(template, attributes, asctime)
        names = list(attributes)
        if names[: len(_LEADING)] == _LEADING:
            del names[: len(_LEADING)]
        # ``update(**…)`` as stock, so that a name that is not a str raises TypeError here too
        fields.update(**{name: attributes[name] for name in names if name not in _RESERVED})
        deserialize = self.json_deserializer
        if deserialize is _json_message and msg.lstrip()[:1] not in ("{", "["):
            fields["message"] = msg  # what _json_message returns for it, without the call
        else:
            try:
                fields["message"] = deserialize(msg)
            except (json.JSONDecodeError, TypeError, ValueError):
                fields["message"] = msg
        if self.serialize_stacktrace:
            fields["stack_trace"] = None
        if log_format.get("xray_trace_id", "") is None:  # _trace_id, inlined
            fields["xray_trace_id"] = None
        else:
            trace_id = os.environ.get(constants.XRAY_TRACE_ID_ENV)
            fields["xray_trace_id"] = trace_id.split(";")[0].replace("Root=", "") if trace_id else None
        return {key: value for key, value in fields.items() if value is not None}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        converter = self.converter
        if (
            self.use_rfc3339_iso8601
            or (datefmt if datefmt is not None else self.datefmt)
            or (converter is not time.localtime and converter is not time.gmtime)
            or self.default_time_format is not LambdaPowertoolsFormatter.default_time_format
            or self.custom_ms_time_directive is not LambdaPowertoolsFormatter.custom_ms_time_directive
        ):
            return super().formatTime(record, datefmt)
        created = record.created
        try:
            second = math.floor(created)  # localtime and gmtime round a float timestamp down too
        except (TypeError, ValueError, OverflowError):
            return super().formatTime(record, datefmt)
        cached = self._second
        tzname = time.tzname  # a new tuple after each time.tzset()
        if cached is not None and cached[0] == second and cached[1] is converter and cached[2] is tzname:
            parts = cached[3]
        else:
            fmt = self.default_time_format.replace(self.custom_ms_time_directive, _MS_MARK)
            parts = tuple(time.strftime(fmt, converter(created)).split(_MS_MARK))
            self._second = (second, converter, tzname, parts)
        return ("%03d" % record.msecs).join(parts)  # noqa: UP031 - stock's own expression


def _json_message(message: Any) -> Any:
    """Powertools' message decoding, for messages that can hold a JSON object or array."""
    if isinstance(message, str) and message.lstrip()[:1] not in ("{", "["):
        return message
    return json.loads(message)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]  # any text stream, as Powertools' own
    """Powertools' default handler (a ``StreamHandler`` on stdout) that handles a record in one call.

    Stock ``Handler.handle`` runs ``filter()``, takes the lock in ``handle`` and again in
    ``flush``, and looks ``flush`` up on every line. This writes the same line to the same
    stream and flushes it, under the lock once; a handler given filters takes the stock path.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if self.filters:
            return bool(super().handle(record))
        try:
            line = (self.formatter or logging.Formatter()).format(record) + self.terminator
            with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
                stream = self.stream
                stream.write(line)
                stream.flush()
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)
        return True


_INDENT = constants.PRETTY_INDENT if powertools_dev_is_set() else constants.COMPACT_INDENT

# Powertools' serializer options (``default=str``, compact, no ASCII escaping, indented under
# POWERTOOLS_DEV), built once: Powertools' own ``functools.partial(json.dumps, …)`` builds an
# encoder per line.
_SERIALIZE = (
    compact_encoder(ensure_ascii=False, default=str)
    if _INDENT is None
    else json.JSONEncoder(default=str, separators=(",", ":"), indent=_INDENT, ensure_ascii=False).encode
)

logger = Logger(
    logger_handler=LineHandler(sys.stdout),
    logger_formatter=BrokerFormatter(json_serializer=_SERIALIZE, json_deserializer=_json_message),
)
# Records stop at this logger. Powertools otherwise lets them reach the root logger, where it
# has filtered each root handler (awslambdaric's in Lambda) to drop them again, per line.
logging.getLogger(logger.name).propagate = False

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
