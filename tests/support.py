"""What every suite shares: planted secret values, events, and a log sink.

Every value a test plants (password, client secret, exchange token, tokens the upstream
returns) is listed in ``PLANTED``; the log sink records every log line of the run, and the
session fails if any planted value appears in one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

DEMO_SECRET = {
    "client_id": "demo-client",
    "client_secret": "demo-client-secret-Zq8",
    "exchange_token": "demo-exchange-token-Kp2",
    "partner_id": "partner-42",
}
ISSUED = {"access_token": "at-PLANTED-4f9c1e", "refresh_token": "rt-PLANTED-77d0aa", "id_token": "idt-PLANTED-93be"}
# Never in a log line. (The client_id and partner_id are identifiers, not secrets.)
PLANTED = (
    "demo-password",
    "not-the-password",
    "demo-refresh-token",
    DEMO_SECRET["client_secret"],
    DEMO_SECRET["exchange_token"],
    *ISSUED.values(),
)


def load_event(name: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(changes)
    return event


class LogSink(logging.Handler):
    """Collects every formatted record, whichever logger emitted it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record must not hide the others
            text = str(record.msg)
        self.lines.append(text + " " + json.dumps(record.__dict__, default=str))


SINK = LogSink()


def leaked(lines: list[str]) -> list[tuple[str, str]]:
    return [(value, line[:300]) for line in lines for value in PLANTED if value in line]
