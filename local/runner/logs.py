"""One place every log line goes through: the runner's stderr and, optionally, a log file.

Lines are prefixed with their source (``[PasswordFunction]``, ``[runner]``). The runner's
own lines name method, path, function, status and duration only: never a body, a query
string or a header value.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import IO


class LogSink:
    def __init__(self, stream: IO[str] | None = None, log_file: Path | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._file = None if log_file is None else log_file.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def line(self, source: str, text: str) -> None:
        record = f"[{source}] {text}\n"
        with self._lock:
            self._stream.write(record)
            self._stream.flush()
            if self._file is not None:
                self._file.write(record)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
