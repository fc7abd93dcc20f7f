"""``python -m local.samlocal`` (``make sam-local``): ``sam local start-api`` against the local stack.

Starts what ``local.samlocal.stack`` describes (a private Docker daemon and the stand-in
image only when needed), then ``sam local start-api --warm-containers EAGER`` on
``--port`` until Ctrl-C, and stops everything it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from local.runner.logs import LogSink
from local.runner.services import DEMO_PASSWORD, DEMO_USERNAME
from local.samlocal.stack import sam_local


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.samlocal", description=__doc__)
    parser.add_argument("--port", type=int, default=3000)
    options = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    with tempfile.TemporaryDirectory(prefix="samlocal-") as work:
        sink = LogSink()
        with sam_local(sink, Path(work)) as sam, sam.start_api(options.port) as url:
            sink.line("samlocal", f"Docker: {sam.docker.host} ({'private' if sam.docker.private else 'running'})")
            sink.line("samlocal", f"python3.13 image: {sam.base_image}; functions run in {sam.invoke_image}")
            sink.line("samlocal", f"sam local start-api on {url}; its log: {work}/start-api-{options.port}.log")
            sink.line("samlocal", f"demo user: {DEMO_USERNAME} / {DEMO_PASSWORD}; Ctrl-C stops everything")
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
