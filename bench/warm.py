"""Child process of bench/run.py: runs inside the Lambda-like runtime, cwd = a function's dir.

    warm.py loop  EVENT N NAIVE_EVERY PARTS OUT
                                            interleaved: broker handler, raw PoolManager, naive
                                            (every NAIVE_EVERY-th round; 0: never); PARTS "parts":
                                            also the handler without its log line, and without
                                            inject_lambda_context too ("whole": neither)
    warm.py count EVENT N OUT               1 cold + N warm invocations, compilations counted
    warm.py rss   EVENT OUT                 import + one invocation, then peak RSS

The handler runs in the main thread, as in Lambda; its log lines go to this process's stdout,
which the bench sends to a file. The raw call goes to the same upstream as the function
(BROKER_TOKEN_URL): the bench points both at the instant upstream or at the work upstream.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


class Context:
    function_name = "bench-function"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-function"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    function_version = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def invoke(handler: Any, event: dict[str, Any]) -> None:
    response = handler(event, Context())
    if response["statusCode"] != 200:
        raise SystemExit(f"not a 200: {response}")


def main() -> None:
    sys.path.insert(0, os.getcwd())  # the function's dir, as Lambda's task root
    mode, event_path = sys.argv[1], sys.argv[2]
    event = json.loads(Path(event_path).read_text())
    out = Path(sys.argv[-1])
    if mode == "rss":
        import app

        invoke(app.lambda_handler, event)
        out.write_text(json.dumps({"max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
        return

    # Every compilation of Python source in this process (a module imported without its .pyc,
    # exec/eval of a string, the code a schema compiler generates) raises the "compile" audit
    # event; fastjsonschema.compile, the one schema compiler there is, is counted by name too.
    sources = [0]
    sys.addaudithook(lambda event, _args: sources.__setitem__(0, sources[0] + 1) if event == "compile" else None)
    schemas = [0]
    try:
        import fastjsonschema
    except ImportError:  # not in the runtime: the schemas are compiled ahead of time (broker/validators)
        pass
    else:
        original = fastjsonschema.compile

        def counting_compile(*args: Any, **kwargs: Any) -> Any:
            schemas[0] += 1
            return original(*args, **kwargs)

        fastjsonschema.compile = counting_compile
    import app

    at_import = (schemas[0], sources[0])
    if mode == "count":
        invoke(app.lambda_handler, event)  # the cold invocation: first secret read, first connection
        for _ in range(int(sys.argv[3])):
            invoke(app.lambda_handler, event)
        counts = {
            "schemas_at_import": at_import[0],
            "schemas_after_import": schemas[0] - at_import[0],
            "sources_at_import": at_import[1],
            "sources_after_import": sources[0] - at_import[1],
            "fastjsonschema_loaded": "fastjsonschema" in sys.modules,
        }
        out.write_text(json.dumps(counts))
        return

    out.write_text(json.dumps(loop(app.lambda_handler, event)))


def loop(handler: Any, event: dict[str, Any]) -> dict[str, list[int]]:
    """The interleaved loop: each call's duration per round, in ns."""
    import naive
    import urllib3

    from broker.observability import logger

    rounds, naive_every, parts = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "parts"
    raw_pool = urllib3.PoolManager()
    url = os.environ["BROKER_TOKEN_URL"]
    body = b"grant_type=password&username=demo&password=demo-password&client_id=bench-client&client_secret=x"
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}

    def raw(event: dict[str, Any], context: Context) -> dict[str, Any]:
        answer = raw_pool.request("POST", url, body=body, headers=headers)
        return {"statusCode": answer.status}

    def check(response: dict[str, Any]) -> None:
        if response["statusCode"] != 200:
            raise SystemExit(f"not a 200: {response}")

    calls: dict[str, Any] = {"broker": handler, "raw": raw}
    if parts:  # where the added time goes: the same handler without its log line, then also undecorated
        calls["no_log_line"] = handler
        calls["no_decorator"] = handler.__wrapped__  # functools.wraps keeps the handler itself
    quiet = {"no_log_line", "no_decorator"}  # run with the level at WARNING: the INFO line is not written
    names = list(calls)
    samples: dict[str, list[int]] = {name: [] for name in [*names, "naive"]}
    clock = time.perf_counter_ns
    for i in range(-200, rounds):  # 200 warm-up rounds, not recorded
        # Each call takes each place in the round in turn, so none always follows another's upstream work.
        turn = i % len(names)
        for name in names[turn:] + names[:turn]:
            # The runtime makes each invocation's context before it calls the handler: not timed.
            context = Context()
            if name in quiet:
                logger.setLevel("WARNING")
            start = clock()
            response = calls[name](event, context)
            took = clock() - start
            if name in quiet:
                logger.setLevel("INFO")
            check(response)
            if i >= 0:
                samples[name].append(took)
        if naive_every and i % naive_every == 0:
            context = Context()
            start = clock()
            response = naive.lambda_handler(event, context)
            if i >= 0:
                samples["naive"].append(clock() - start)
            check(response)
    return samples


if __name__ == "__main__":
    main()
