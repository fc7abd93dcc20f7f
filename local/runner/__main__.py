from __future__ import annotations

import sys

from local.runner.main import main

raise SystemExit(main(sys.argv[1:]))
