"""BrokerFormatter writes, byte for byte, the line Powertools' LambdaPowertoolsFormatter writes.

Each test builds a pair configured the same way, the stock formatter and BrokerFormatter, gives
both the same keys and the same record, and compares what ``format(record)`` gives: the line,
or the type of the error when stock raises. Records are made at chosen nanoseconds through the
stdlib's own ``LogRecord`` (``time.time_ns`` patched), so ``created`` and ``msecs`` are what a
real line at that instant carries.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any
from unittest import mock

import pytest
from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.logging import logger as powertools_logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.shared import constants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import observability
from broker.observability import BrokerFormatter
from tests.unit.conftest import FakeContext

Pair = tuple[LambdaPowertoolsFormatter, BrokerFormatter]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

TRACE_ENV = constants.XRAY_TRACE_ID_ENV  # _X_AMZN_TRACE_ID
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
SECOND = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC, in ns
NOW = SECOND + 123_456_789
# .999 of a second, the next second, and a last nanosecond that ``ns / 1e9`` rounds up to it
BOUNDARY = (SECOND + 999_000_000, SECOND + 10**9, SECOND + 999_999_999, SECOND + 10**9 + 1_000_000)
# POSIX TZ strings (no tzdata needed): UTC, +05:30, and -03:30 with a summer time at -02:30
ZONES = ("UTC0", "IST-5:30", "NST3:30NDT,M3.2.0,M11.1.0")

LAMBDA_KEYS: dict[str, Any] = {
    "service": "token-broker",
    "sampling_rate": None,
    "cold_start": False,
    "function_name": FakeContext.function_name,
    "function_memory_size": FakeContext.memory_limit_in_mb,
    "function_arn": FakeContext.invoked_function_arn,
    "function_request_id": FakeContext.aws_request_id,
    "correlation_id": "c0ffee00-1111-2222-3333-444455556666",
}
TYPICAL_EXTRA: dict[str, Any] = {"grant": "password", "status": 200, "duration_ms": 12.34}


def _broker_options() -> dict[str, Any]:
    """The serializer and message decoder the broker's logger uses (whatever its formatter is:
    test_the_broker_logger_formats_with_broker_formatter checks that)."""
    formatter = vars(observability.logger.registered_formatter)
    return {"json_serializer": formatter["json_serializer"], "json_deserializer": formatter["json_deserializer"]}


BROKER = _broker_options()


def pair(**options: Any) -> Pair:
    return LambdaPowertoolsFormatter(**options), BrokerFormatter(**options)


def make_record(
    msg: Any = "Token request finished",
    args: Any = None,
    *,
    ns: int = NOW,
    levelno: int = logging.INFO,
    exc_info: Any = None,
    sinfo: str | None = None,
    **attributes: Any,
) -> logging.LogRecord:
    """A LogRecord created at ``ns``, with ``attributes`` added as ``extra=`` (or a formatter) would."""
    with mock.patch("time.time_ns", return_value=ns):
        record = logging.LogRecord("token-broker", levelno, __file__, 42, msg, args, exc_info, "handler", sinfo)
    record.__dict__.update(attributes)
    return record


def outcome(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    try:
        return formatter.format(record)
    except Exception as exc:  # stock raising is part of its behaviour: compare the error type
        return f"raises {type(exc).__name__}"


def assert_same(formatters: Pair, *records: logging.LogRecord) -> list[str]:
    """Both formatters give the same outcome for each record, and neither changes the record."""
    lines = []
    for record in records:
        before = dict(record.__dict__)
        stock, broker = (outcome(formatter, record) for formatter in formatters)
        assert broker == stock
        assert record.__dict__ == before
        lines.append(broker)
    return lines


def exc_info_of(exc: BaseException) -> ExcInfo:
    try:
        raise exc
    except BaseException:  # captured, as logger.exception does
        info = sys.exc_info()
    assert info[0] is not None
    assert info[1] is not None
    return info[0], info[1], info[2]


@pytest.fixture(autouse=True)
def no_thread_safe_keys() -> Iterator[None]:
    """Thread-safe keys live in one ContextVar shared by every formatter: none leak in or out."""
    LambdaPowertoolsFormatter().thread_safe_clear_keys()
    yield
    LambdaPowertoolsFormatter().thread_safe_clear_keys()


@pytest.fixture
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Sets TZ (and ``time.tzset``) to the parametrized zone; restores the previous one."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


@pytest.fixture
def no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACE_ENV, raising=False)


# --- the broker's own line ------------------------------------------------------------------


def broker_pair(monkeypatch: pytest.MonkeyPatch, trace: str | None, keys: dict[str, Any]) -> Pair:
    """Stock and broker formatters with the broker's options, ``keys`` appended, the trace id set or not."""
    if trace is None:
        monkeypatch.delenv(TRACE_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACE_ENV, trace)
    formatters = pair(**BROKER)
    for formatter in formatters:
        formatter.append_keys(**keys)
    return formatters


@pytest.mark.parametrize("trace", [None, TRACE])
def test_the_broker_line_is_the_stock_line(monkeypatch: pytest.MonkeyPatch, trace: str | None) -> None:
    # Given the broker's options and the keys inject_lambda_context and set_correlation_id append
    formatters = broker_pair(monkeypatch, trace, LAMBDA_KEYS)
    # When each formats the line every grant writes
    [line] = assert_same(formatters, make_record(**TYPICAL_EXTRA))
    # Then (same bytes, and) the line is the expected JSON, message in its stock place
    assert list(json.loads(line)) == [
        "level",
        "location",
        "message",
        "timestamp",
        "service",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "correlation_id",
        "grant",
        "status",
        "duration_ms",
        *(["xray_trace_id"] if trace else []),
    ]
    assert json.loads(line)["timestamp"][19:23] == ",123"


def test_the_broker_line_takes_the_short_path(monkeypatch: pytest.MonkeyPatch, no_trace: None) -> None:
    # Given stock's helpers made to fail, and a strftime that counts its calls
    def stock_helper(*_: Any, **__: Any) -> Any:
        raise AssertionError("stock helper called")

    for helper in ("_extract_log_keys", "_extract_log_exception", "_serialize_stacktrace", "_get_latest_trace_id"):
        monkeypatch.setattr(LambdaPowertoolsFormatter, helper, stock_helper)
    strftime = mock.Mock(wraps=time.strftime)
    monkeypatch.setattr(time, "strftime", strftime)
    formatter = BrokerFormatter(**BROKER)
    formatter.append_keys(**LAMBDA_KEYS)
    # When it formats five ordinary lines within one second, then one in the next second
    lines = [formatter.format(make_record(ns=SECOND + n * 100_000_000, **TYPICAL_EXTRA)) for n in range(5)]
    lines.append(formatter.format(make_record(ns=SECOND + 10**9)))
    # Then none of stock's helpers ran, and strftime ran once per second
    assert [json.loads(line)["message"] for line in lines] == ["Token request finished"] * 6
    assert strftime.call_count == 2


# --- messages ---------------------------------------------------------------------------------

MESSAGES: list[tuple[Any, Any]] = [
    ("Token request finished", None),
    ("", None),
    ('{"grant": "password", "status": 200}', None),
    ('  [1, "two", null]', None),
    ("null", None),
    ("true", None),
    ("12.5", None),
    ("{not json", None),
    ("[1,", None),
    ({"grant": "password", "nested": {"a": [1, 2]}}, None),
    ("Token request %s in %d ms", ("finished", 12)),
    ("%(grant)s finished", ({"grant": "password"},)),
    ("%s and %s", ("one",)),  # getMessage raises: both raise
    ("no placeholder", ("extra",)),  # likewise
    ('{"a": %d}', (1,)),
    (42, None),
    (None, None),
    (["a", "list"], None),
    (ValueError("an exception as the message"), None),
]


@pytest.mark.parametrize("options", [BROKER, {}], ids=["broker-options", "powertools-defaults"])
@pytest.mark.parametrize(("msg", "args"), MESSAGES)
def test_messages_are_decoded_and_placed_as_stock(options: dict[str, Any], msg: Any, args: Any) -> None:
    # Given a pair with the broker's options or Powertools' defaults (json.loads, partial json.dumps)
    formatters = pair(**options)
    # When a record carries this message (and args), Then both write the same
    assert_same(formatters, make_record(msg, args))


# --- extras -----------------------------------------------------------------------------------


@pytest.mark.parametrize("serialize_stacktrace", [True, False])
@pytest.mark.parametrize(
    "attributes",
    [
        {"exception": "an extra", "exception_name": "Extra", "exception_notes": ["a note"]},
        {"exception": None, "exception_name": 0, "exception_notes": ""},
        {"stack_trace": {"frames": []}},
        {"stack_trace": None},
        {"message": "set by another handler's formatter", "asctime": "2020-01-01 00:00:00,000"},
        {"timestamp": "ignored: reserved", "location": "ignored: reserved"},
        {"taskName": "Task-7"},
        {"level": "an extra named level", "service": "an extra named service", "correlation_id": None},
        {"xray_trace_id": "an extra named xray_trace_id"},
        {"grant": None, "status": 0, "duration_ms": -0.0},
        {"nested": {"a": [1, None]}, "not_json": object, "bytes": b"\x00\xff", "nan": float("nan")},
        {"é": "non-ASCII name", "line\nbreak": "\u2028 and \ud800"},
        {7: "a name that is not a str"},
    ],
)
def test_extras_land_as_stock(
    monkeypatch: pytest.MonkeyPatch, serialize_stacktrace: bool, attributes: dict[Any, Any]
) -> None:
    # Given a pair with the Lambda keys, and a trace id in the environment
    monkeypatch.setenv(TRACE_ENV, TRACE)
    formatters = pair(serialize_stacktrace=serialize_stacktrace, **BROKER)
    for formatter in formatters:
        formatter.append_keys(**LAMBDA_KEYS)
    # When the record carries extras named like keys stock sets, drops or reserves
    record = make_record(**TYPICAL_EXTRA)
    record.__dict__.update(attributes)
    # Then both write the same line (or both raise)
    assert_same(formatters, record)


# --- appended keys, templates, key order -------------------------------------------------------

APPENDED: list[dict[str, Any]] = [
    LAMBDA_KEYS,
    {"correlation_id": None, "cold_start": None, "service": None},
    {"message": "a key named message", "exception": "a key named exception", "stack_trace": "kept?"},
    {"name": "%(name)s", "process": "%(process)s", "thread": "%(threadName)s"},
    {"level": "%(levelname)s/%(levelno)d", "timestamp": "%(asctime)s|%(msecs)03d", "location": "%(pathname)s"},
    {"asctime": "%(asctime)s", "msecs": "%(msecs)d", "created": "%(created)f"},
    {"location": "%s"},  # no key: the whole mapping, asctime included
    {"location": "%r and %%"},
    {"module": "%%(module)s is literal"},
    {"module": "%(module)s at %(asctime)s"},
    {"funcName": "", "lineno": 0, "filename": None, "args": []},  # falsy: kept as they are
    {"filename": 7},  # not a str: stock raises ValueError
    {"filename": ["a list"]},
    {"lineno": "%(no_such_attribute)s"},  # stock raises KeyError
    {"lineno": "%(lineno)s %"},  # incomplete format: stock raises ValueError
    {"name": "%(grant)s"},  # an extra, through a template
    {"xray_trace_id": None},  # explicitly disabled
    {"xray_trace_id": "a value: replaced by the env var, or dropped"},
]


@pytest.mark.parametrize("trace", [None, TRACE, ""])
@pytest.mark.parametrize("keys", APPENDED)
def test_appended_keys_render_as_stock(
    monkeypatch: pytest.MonkeyPatch, keys: dict[str, Any], trace: str | None
) -> None:
    # Given a pair with these keys appended, with or without a trace id in the environment
    formatters = broker_pair(monkeypatch, trace, keys)
    # When each formats an ordinary record, and one that another handler's formatter has
    # given its own "message" and "asctime", Then the same lines (or both raise)
    stale = make_record("plain", message="plain", asctime="2001-01-01 00:00:00,000")
    assert_same(formatters, make_record(**TYPICAL_EXTRA), make_record("plain"), stale)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.remove_keys(["message"]),
        lambda f: f.remove_keys(["level", "location", "timestamp"]),
        lambda f: f.append_keys(message="a fixed message"),
        lambda f: f.append_keys(message=None, level=None),
        lambda f: f.clear_state(),
    ],
)
def test_removed_and_replaced_keys_as_stock(change: Callable[[LambdaPowertoolsFormatter], None]) -> None:
    # Given a pair with the Lambda keys, then the same change to each
    formatters = pair(**BROKER)
    for formatter in formatters:
        formatter.append_keys(**LAMBDA_KEYS)
        change(formatter)
    # When a record has an extra named message too (as another handler's formatter sets it)
    with_message = make_record(**TYPICAL_EXTRA)
    with_message.message = "set by another formatter"
    # Then both write the same lines
    assert_same(formatters, make_record(**TYPICAL_EXTRA), with_message)


@pytest.mark.parametrize(
    "order",
    [["message"], ["timestamp", "message", "level"], ["level", "location", "timestamp"], ["grant", "status"]],
)
def test_log_record_order_as_stock(order: list[str]) -> None:
    # Given a pair with a custom log_record_order (one without "message" among them)
    formatters = pair(log_record_order=order, **BROKER)
    # When each formats records with and without the keys the order names, Then the same lines
    assert_same(formatters, make_record(**TYPICAL_EXTRA), make_record("plain"))


def test_thread_safe_keys_render_as_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a pair with the Lambda keys, and thread-safe keys (shared by every formatter) that
    # override appended ones, name reserved attributes, or are None
    monkeypatch.setenv(TRACE_ENV, TRACE)
    formatters = pair(**BROKER)
    for formatter in formatters:
        formatter.append_keys(**LAMBDA_KEYS)
    formatters[1].thread_safe_append_keys(
        request_id="r-1",
        correlation_id="from the thread",
        cold_start=None,
        level="%(levelname)s!",
        location="%s",
        message="a thread-safe message key",
        xray_trace_id="thread",
    )
    # When each formats records, Then the same lines
    assert_same(formatters, make_record(**TYPICAL_EXTRA), make_record("plain", grant="again"))
    # And a thread-safe key that is not a str on a reserved name: both raise
    formatters[1].thread_safe_append_keys(process=3)
    assert_same(formatters, make_record())


class EarlyRecord(logging.LogRecord):
    """A record class (as a LogRecord factory may install) that sets an attribute before the stdlib's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.grant = "set first"
        super().__init__(*args, **kwargs)


def test_a_record_whose_attributes_come_in_another_order_as_stock() -> None:
    # Given a pair, and a record whose dict starts with an extra rather than the stdlib's attributes
    formatters = pair(**BROKER)
    record = EarlyRecord("token-broker", logging.INFO, __file__, 42, "Token request finished", None, None)
    record.status = 200
    # When each formats it, Then the same line, with both extras in their place
    [line] = assert_same(formatters, record)
    assert list(json.loads(line))[-2:] == ["grant", "status"]


# --- exceptions and stack information ----------------------------------------------------------


def _with_notes() -> BaseException:
    exc = KeyError("upstream")
    exc.add_note("while reading the secret")
    return exc


@pytest.mark.parametrize("serialize_stacktrace", [True, False])
@pytest.mark.parametrize(
    "exc_info",
    [
        exc_info_of(ValueError("boom")),
        exc_info_of(_with_notes()),
        (None, None, None),  # sys.exc_info() outside an except block
        False,
        True,  # not a tuple: stock ignores it
        (),  # a tuple: stock indexes it and raises
    ],
)
def test_exceptions_as_stock(serialize_stacktrace: bool, exc_info: Any) -> None:
    # Given a pair with the Lambda keys
    formatters = pair(serialize_stacktrace=serialize_stacktrace, **BROKER)
    for formatter in formatters:
        formatter.append_keys(**LAMBDA_KEYS)
    # When records carry exception information (with and without extras of the same names)
    records = [
        make_record("Unexpected failure", exc_info=exc_info, levelno=logging.ERROR),
        make_record("Unexpected failure", exc_info=exc_info, exception="extra", stack_trace="extra"),
    ]
    # Then both write the same lines
    assert_same(formatters, *records)


def test_exc_text_and_stack_info_as_stock() -> None:
    # Given a pair, When records carry exc_text or stack_info (stock writes neither), Then the same
    formatters = pair(**BROKER)
    stack = "".join(traceback.format_stack())
    assert_same(formatters, make_record(sinfo=stack), make_record(exc_text="Traceback ...", **TYPICAL_EXTRA))


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ZONES, indirect=True)
@pytest.mark.parametrize("utc", [False, True])
def test_timestamps_across_a_second_boundary_as_stock(zone: str, utc: bool) -> None:
    # Given a pair in local time or UTC, in a zone with a whole, half-hour or summer-time offset
    formatters = pair(utc=utc, **BROKER)
    # When records come at .999 of a second, the next second, and back (cache hit, miss, miss)
    instants = [*BOUNDARY, SECOND + 999_000_000, SECOND - 1, 0, -1, NOW]
    # and in July, when the third zone is on summer time
    instants += [1_720_000_000 * 10**9 + 5_000_000, 1_720_000_000 * 10**9 + 6_000_000]
    lines = assert_same(formatters, *[make_record(ns=ns) for ns in instants])
    # Then both write the same lines, and the milliseconds turn over with the second
    stamps = [json.loads(line)["timestamp"] for line in lines]
    assert [stamp[17:23] for stamp in stamps[:4]] == ["20,999", "21,000", "21,000", "21,001"]


@pytest.mark.parametrize("zone", ["UTC0"], indirect=True)
def test_a_time_zone_change_within_a_second_is_seen(zone: str) -> None:
    # Given a pair in local time that has formatted a line in UTC
    formatters = pair(**BROKER)
    [utc_line] = assert_same(formatters, make_record())
    # When the zone changes (time.tzset) and a record comes in the same second
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    [local_line] = assert_same(formatters, make_record(ns=NOW + 1_000_000))
    # Then both see the new offset
    assert json.loads(utc_line)["timestamp"].endswith("+0000")
    assert json.loads(local_line)["timestamp"].endswith(",124+0530")


def test_a_changed_converter_is_followed() -> None:
    # Given a pair that has formatted a line with the local-time converter
    formatters = pair(**BROKER)
    assert_same(formatters, make_record())

    # When both are switched to a converter whose second is not the record's whole second
    def half_a_second_ahead(seconds: float | None) -> time.struct_time:
        return time.gmtime((seconds or 0.0) + 0.5)

    for formatter in formatters:
        formatter.converter = half_a_second_ahead
    lines = assert_same(formatters, make_record(ns=SECOND + 100_000_000), make_record(ns=SECOND + 700_000_000))
    # Then they still agree, the second of those two lines in the next second
    assert [json.loads(line)["timestamp"][17:23] for line in lines] == ["20,100", "21,700"]


@pytest.mark.parametrize(
    "options",
    [
        {"datefmt": "%H:%M:%S.%F"},
        {"datefmt": "%Y %%F %F"},
        {"datefmt": "%d/%m/%Y %H:%M:%S,%F", "use_datetime_directive": True},
        {"use_rfc3339": True},
        {"use_rfc3339": True, "utc": True},
        {"datefmt": ""},
    ],
)
def test_other_date_formats_as_stock(options: dict[str, Any]) -> None:
    # Given a pair with a date format option, When records cross a second, Then the same lines
    assert_same(pair(**options, **BROKER), *[make_record(ns=ns) for ns in BOUNDARY])


def test_odd_created_and_msecs_as_stock() -> None:
    # Given a pair, When records carry timestamps no stdlib record has, Then the same (or both raise)
    formatters = pair(**BROKER)
    odd: list[dict[str, Any]] = [
        {"created": 1_700_000_000, "msecs": 7},
        {"created": 1_700_000_000.5, "msecs": 999.9999},
        {"created": 1_700_000_000.5, "msecs": 5.7},
        {"created": 1_700_000_000.5, "msecs": -1.0},
        {"created": 1_700_000_000.5, "msecs": 1000.0},
        {"created": float("nan")},
        {"created": float("inf")},
        {"created": "not a number"},
        {"msecs": "not a number"},
    ]
    assert_same(formatters, *[make_record(**attributes) for attributes in odd])


# --- POWERTOOLS_DEV ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:POWERTOOLS_DEV environment variable is enabled")
def test_powertools_dev_indent_as_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given POWERTOOLS_DEV, under which stock indents its JSON
    monkeypatch.setenv(constants.POWERTOOLS_DEV_ENV, "true")
    pretty = json.JSONEncoder(
        default=str, separators=(",", ":"), indent=constants.PRETTY_INDENT, ensure_ascii=False
    ).encode
    for formatters in (pair(), pair(json_serializer=pretty, json_deserializer=BROKER["json_deserializer"])):
        for formatter in formatters:
            formatter.append_keys(**LAMBDA_KEYS)
        # When each formats the broker's line, Then the same indented lines
        [line] = assert_same(formatters, make_record(**TYPICAL_EXTRA))
        assert '\n    "message":"Token request finished",\n' in line


# --- any record -------------------------------------------------------------------------------

plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
templates = st.sampled_from(
    [
        "%(levelname)s",
        "%(funcName)s:%(lineno)d",
        "%(asctime)s",
        "%(name)s@%(asctime)s",
        "%(asctime)s%(asctime)s",
        "%s",
        "%(process)d",
        "%%(name)s",
        "%(missing)s",
        "%(message)s",
        "%(msecs)03d",
        "%(grant)s",
        "%(taskName)s",
        "",
        "literal",
        "%",
    ]
)
key_names = st.sampled_from(
    [
        *("level", "location", "timestamp", "message", "service", "correlation_id", "cold_start"),
        *("exception", "exception_name", "exception_notes", "stack_trace", "xray_trace_id", "grant"),
        *("name", "process", "asctime", "msecs", "funcName", "levelname"),  # reserved attributes
    ]
)
# attributes a record may carry besides the stdlib's: extras, and what other formatters set
attribute_names = st.sampled_from(
    [
        *("grant", "status", "duration_ms", "error", "exception", "exception_name", "exception_notes"),
        *("stack_trace", "xray_trace_id", "correlation_id", "service", "level", "location", "timestamp"),
        *("message", "asctime", "taskName", "name", "levelname", "funcName", "lineno"),
    ]
)
messages = st.one_of(
    st.text(max_size=12),
    st.sampled_from(['{"a": 1}', "[1, 2]", "null", " {", "{bad", "true", "1e3", "[]", "%s", "%(grant)s"]),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(),
)
arguments = st.sampled_from([None, (), ("x",), ({"grant": "password"},), (1, 2)])
instants = st.one_of(
    st.integers(min_value=-(10**12), max_value=2_000_000_000 * 10**9),
    st.sampled_from(BOUNDARY),
    st.integers(min_value=0, max_value=2_000).map(lambda ms: SECOND + ms * 1_000_000 - 1),
)
options = st.fixed_dictionaries(
    {
        "utc": st.booleans(),
        "serialize_stacktrace": st.booleans(),
        "log_record_order": st.sampled_from([None, ["message"], ["timestamp", "level", "message"], ["grant"]]),
        "json_serializer": st.sampled_from([None, BROKER["json_serializer"]]),
        "json_deserializer": st.sampled_from([None, BROKER["json_deserializer"]]),
    }
)
FAILURE = exc_info_of(_with_notes())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    options=options,
    appended=st.dictionaries(key_names, plain_values | templates, max_size=6),
    thread_safe=st.dictionaries(key_names, plain_values | templates, max_size=3),
    records=st.lists(
        st.tuples(
            messages, arguments, instants, st.dictionaries(attribute_names, plain_values, max_size=5), st.booleans()
        ),
        min_size=1,
        max_size=4,
    ),
    trace=st.sampled_from([None, "", TRACE, "Parent=53995c3f42cd8ad8", "Root=abc"]),
    zone=st.sampled_from(ZONES),
)
def test_any_record_as_stock(
    options: dict[str, Any],
    appended: dict[str, Any],
    thread_safe: dict[str, Any],
    records: list[tuple[Any, Any, int, dict[str, Any], bool]],
    trace: str | None,
    zone: str,
) -> None:
    # Given a pair with any options, appended and thread-safe keys, time zone and trace id
    formatters = pair(**options)
    for formatter in formatters:
        formatter.append_keys(**appended)
    environment = {"TZ": zone} if trace is None else {"TZ": zone, TRACE_ENV: trace}
    try:
        with mock.patch.dict(os.environ, environment):
            if trace is None:
                os.environ.pop(TRACE_ENV, None)
            time.tzset()
            formatters[1].thread_safe_append_keys(**thread_safe)
            # When each formats the same records, one after the other
            made = [
                make_record(msg, args, ns=ns, exc_info=FAILURE if failed else None, **attributes)
                for msg, args, ns, attributes, failed in records
            ]
            # Then each line is the same, or both raise
            assert_same(formatters, *made)
    finally:
        formatters[1].thread_safe_clear_keys()
        time.tzset()  # the zone patch.dict put back


# --- through Powertools' Logger ------------------------------------------------------------------


class Twin(logging.Handler):
    """Formats each record, as it is emitted, with another formatter."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_logger_with_broker_formatter_writes_what_the_stock_logger_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two Loggers, one configured the stock way, one with a BrokerFormatter; the
    # BrokerFormatter one also formats each of its records with the stock one's formatter
    monkeypatch.setenv(TRACE_ENV, TRACE)
    tag = uuid.uuid4().hex[:8]
    out = io.StringIO()
    stock = Logger(service=f"stock-{tag}", stream=io.StringIO(), **BROKER)
    broker = Logger(service=f"broker-{tag}", stream=out, logger_formatter=BrokerFormatter(**BROKER))
    twin = Twin(stock.registered_formatter)
    broker.addHandler(twin)
    both = (stock, broker)

    def handler(event: dict[str, Any], context: object) -> None:
        broker.info("Token request finished", extra=TYPICAL_EXTRA)
        broker.thread_safe_append_keys(request="thread-safe")
        broker.warning("Upstream connection failed; retrying once", extra={"reason": "TimeoutError"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            broker.exception("Unexpected failure")
        broker.thread_safe_clear_keys()

    # When both go through the same calls: the Lambda context, a correlation id, appended keys
    for correlation in ("req-1", None):
        for logger in both:
            monkeypatch.setattr(powertools_logger, "is_cold_start", True)
            logger.inject_lambda_context(log_event=False)(lambda event, context: None)({}, FakeContext())
            logger.set_correlation_id(correlation)
            logger.append_keys(upstream="bakrypt")
        handler({}, FakeContext())
        broker.info("%s request %s", "Token", "finished")
        broker.info({"a": "dict message"})
        with broker.append_context_keys(temporary="yes"), stock.append_context_keys(temporary="yes"):
            broker.error("Secret read failed", extra={"secret_error": "AccessDenied"})
    for logger in both:
        logger.remove_keys(["upstream"])
        logger.clear_state()
    broker.info("after clear_state")

    # Then the keys are the same, in the same order, and every line is the stock line
    def named(keys: dict[str, Any], service: str) -> list[tuple[str, Any]]:
        return list({**keys, "service": service}.items())

    assert named(broker.get_current_keys(), "x") == named(stock.get_current_keys(), "x")
    lines = out.getvalue().splitlines()
    assert len(lines) == len(twin.lines) == 13
    assert lines == [line.replace(f'"stock-{tag}"', f'"broker-{tag}"') for line in twin.lines]
    first = json.loads(lines[0])
    assert (first["service"], first["cold_start"], first["correlation_id"]) == (f"broker-{tag}", True, "req-1")
    assert first["function_request_id"] == FakeContext.aws_request_id
    assert json.loads(lines[1])["request"] == "thread-safe"
    assert json.loads(lines[2])["exception_name"] == "RuntimeError"


def test_a_logger_with_broker_formatter_keeps_service_and_level_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given POWERTOOLS_SERVICE_NAME and POWERTOOLS_LOG_LEVEL
    service = f"env-service-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(constants.SERVICE_NAME_ENV, service)
    monkeypatch.setenv(constants.POWERTOOLS_LOG_LEVEL_ENV, "WARNING")
    out = io.StringIO()
    # When a Logger is built with a BrokerFormatter and logs at two levels
    logger = Logger(stream=out, logger_formatter=BrokerFormatter(**BROKER))
    logger.info("not written")
    logger.warning("written")
    # Then only the warning is written, with the service from the environment
    [line] = out.getvalue().splitlines()
    assert (json.loads(line)["message"], json.loads(line)["service"]) == ("written", service)
    assert logger.log_level == logging.WARNING


def test_the_broker_logger_formats_with_broker_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the logger every function imports, writing to a buffer
    logger = observability.logger
    formatter = logger.registered_formatter
    assert isinstance(formatter, LambdaPowertoolsFormatter)
    out = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", out)
    short_path = mock.Mock(wraps=getattr(formatter, "_fields", None))
    monkeypatch.setattr(formatter, "_fields", short_path, raising=False)
    # and a stock formatter with the same options and keys, formatting each of its records too
    stock = LambdaPowertoolsFormatter(**BROKER)
    stock.log_format = logger.get_current_keys()
    twin = Twin(stock)
    logger.addHandler(twin)
    try:
        # When it writes a line
        logger.warning("Token request failed", extra=TYPICAL_EXTRA)
    finally:
        logging.getLogger(logger.name).removeHandler(twin)
    # Then its formatter is a BrokerFormatter (a Powertools that ignored logger_formatter= fails
    # here) with the module's serializer and decoder, whose own path wrote the stock line
    assert type(formatter) is BrokerFormatter
    assert formatter.json_deserializer is observability._json_message
    assert short_path.call_count >= 1  # once per handler that has this formatter (the test sink too)
    assert {call.args[0].msg for call in short_path.call_args_list} == {"Token request failed"}
    assert out.getvalue().splitlines() == twin.lines
    assert json.loads(twin.lines[0])["service"] == logger.service
