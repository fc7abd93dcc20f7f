"""`make deploy ENV=…`'s check: the environment exists in samconfig.toml and holds no placeholder.

python -m local.samconfig ENV      exit 0, or print what to change and exit 1
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

SAMCONFIG = Path(__file__).resolve().parents[1] / "samconfig.toml"
PLACEHOLDERS = ("example.com", "example-com", "123456789012")


def parameters(config: dict[str, Any], env: str) -> dict[str, str]:
    """The environment's parameter overrides, as sam merges them (global, then deploy)."""
    merged: dict[str, str] = {}
    for command in ("global", "deploy"):
        overrides = config.get(env, {}).get(command, {}).get("parameters", {}).get("parameter_overrides", [])
        if isinstance(overrides, str):
            overrides = overrides.split()
        merged.update(item.split("=", 1) for item in overrides)
    return merged


def problems(config: dict[str, Any], env: str) -> list[str]:
    if env not in config or env == "version":
        known = ", ".join(name for name in config if name != "version")
        return [f"no environment {env!r} in samconfig.toml (there are: {known})"]
    return [
        f"{name}={value} is a placeholder: set it in samconfig.toml [{env}.*.parameters] (docs/deploy.md)"
        for name, value in parameters(config, env).items()
        if any(marker in value for marker in PLACEHOLDERS)
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m local.samconfig ENV", file=sys.stderr)
        return 2
    found = problems(tomllib.loads(SAMCONFIG.read_text()), argv[0])
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
