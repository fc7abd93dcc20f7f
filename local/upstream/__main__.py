from __future__ import annotations

import sys

from local.upstream.server import main

raise SystemExit(main(sys.argv[1:]))
