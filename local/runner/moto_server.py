"""``python -m local.runner.moto_server``: moto's Secrets Manager (and friends) on a free loopback port.

Prints one line, ``{"ready": true, "url": "http://127.0.0.1:PORT"}``, then serves until SIGTERM.
"""

from __future__ import annotations

import json
import signal
import threading

from moto.server import ThreadedMotoServer


def main() -> int:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(json.dumps({"ready": True, "url": f"http://{host}:{port}"}), flush=True)
    stopping.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
