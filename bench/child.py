"""Run one CPU workload on one runtime, in this process, and print its result line.

``python -m bench.child WORKLOAD RUNTIME PARAMS_JSON``; the harness (run.py)
starts one of these per run, so every run begins in a fresh interpreter and a
crash or a hang costs only that run. The last line printed is
``RESULT {json}``.
"""

from __future__ import annotations

import importlib
import json
import random
import sys
from typing import Any


def main() -> None:
    workload, runtime, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    name = {"asyncio": "aio", "uvloop": "aio"}.get(runtime, runtime)
    module: Any = importlib.import_module(f"bench.runtimes.{name}")
    if name == "aio":
        module.LOOP = runtime
    result: dict[str, Any]
    if workload == "switch":
        result = module.switch(params["tasks"], params["yields"])
    elif workload == "spawn":
        result = module.spawn_join(params["n"])
    elif workload == "pingpong":
        result = module.pingpong(params["n"])
    elif workload == "timers":
        rng = random.Random(params["seed"])  # the same sleeps for every runtime
        durations = [rng.uniform(0.0, params["max_ms"] / 1e3) for _ in range(params["n"])]
        result = module.timers(durations)
    elif workload == "memory":
        result = module.memory(params["n"])  # reports and exits by itself
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
