"""``python -m local.invoke FUNCTION EVENT_FILE``: ``sam local invoke`` without Docker.

Starts moto with the secret (and the local upstream unless ``--env-vars`` or ``--profile``
gives a profile), runs the function once under the real Lambda Runtime Interface Emulator,
prints its response on stdout and the RIE's REPORT line on stderr, then stops everything.
``--env-vars`` takes SAM's format: ``{"Parameters": {...every function...}, "Function": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from local.runner.emulator import Emulator, InvocationError, lambda_environment
from local.runner.logs import LogSink
from local.runner.main import BUILT_TEMPLATE, key_values, sam_build
from local.runner.stack import configure, local_stack, read_secret_file
from local.runner.template import TemplateError, load_app


class Stopping(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stopping


def read_env_vars(path: Path | None) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """SAM's ``--env-vars`` file: variables for every function, and per function."""
    if path is None:
        return {}, {}
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object")
    every = {str(k): _text(v) for k, v in (document.get("Parameters") or {}).items()}
    per_function = {
        str(name): {str(k): _text(v) for k, v in variables.items()}
        for name, variables in document.items()
        if name != "Parameters" and isinstance(variables, dict)
    }
    return every, per_function


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def with_init_duration(report: str, init_ms: float | None) -> str:
    """The RIE's REPORT line, its Init Duration taken from its own INIT REPORT (the line's is not the init)."""
    if init_ms is None:
        return re.sub(r"Init Duration: [0-9.]+ ms\t", "", report)
    return re.sub(r"Init Duration: [0-9.]+ ms", f"Init Duration: {init_ms:.2f} ms", report)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.invoke", description=__doc__)
    parser.add_argument("function", help="the function's logical id, e.g. PasswordFunction")
    parser.add_argument("event", type=Path, help="the event JSON file (events/*.json)")
    parser.add_argument("--env-vars", type=Path, help="SAM --env-vars JSON file")
    parser.add_argument("--profile", help="upstream profile (preset or JSON); default: the local upstream")
    parser.add_argument("--secret-file", type=Path, help="JSON object stored as the secret (default: demo)")
    parser.add_argument("--parameter-overrides", nargs="+", action="extend", metavar="KEY=VALUE")
    parser.add_argument("--no-build", dest="build", action="store_false", help="skip `sam build --cached`")
    parser.add_argument("--template", type=Path, default=BUILT_TEMPLATE, help="the built template")
    return parser.parse_args(argv)


def invoke(args: argparse.Namespace, sink: LogSink) -> int:
    event = args.event.read_bytes()
    json.loads(event)  # fail early on a malformed event file
    if args.build:
        sam_build()
    app = load_app(args.template, key_values(args.parameter_overrides, "--parameter-overrides"))
    if args.function not in app.functions:
        reason = app.skipped.get(args.function, "not in the template")
        known = ", ".join(sorted(app.functions))
        raise TemplateError(f"{args.function}: {reason} (functions: {known})")
    every, per_function = read_env_vars(args.env_vars)
    app, needs_upstream = configure(app, profile=args.profile, env=every, function_env=per_function)
    app = replace(app, functions={args.function: app.functions[args.function]}, routes=())  # one secret, one emulator
    secret = read_secret_file(args.secret_file)
    with local_stack(app, sink, secret=secret, needs_upstream=needs_upstream) as stack:
        function = stack.app.functions[args.function]
        emulator = Emulator(function, lambda_environment(function, stack.services_env), stack.supervisor, sink)
        emulator.start()
        response = emulator.invoke(event)
        sys.stdout.write(response.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
        report = emulator.wait_report(1)
        if report:
            print(with_init_duration(report, emulator.init_duration_ms), file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sink = LogSink()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return invoke(args, sink)
    except Stopping:
        return 130
    except (TemplateError, InvocationError, ValueError, OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        sink.line("invoke", f"error: {exc}")
        return 1
    finally:
        sink.close()


if __name__ == "__main__":
    raise SystemExit(main())
