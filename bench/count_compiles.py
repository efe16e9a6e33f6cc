#!/usr/bin/env python
"""Count the programs a jaxstyle command asks XLA for (compiled, or loaded from the persistent
cache, which this turns off) and the seconds XLA spends on them, in-process:

    python bench/count_compiles.py transfer photo.jpg painting.jpg -o out.png --size 256
"""
from __future__ import annotations

import os
import sys
import time

os.environ["JAXSTYLE_NO_COMPILE_CACHE"] = "1"

from jax import monitoring  # noqa: E402

events: list[float] = []


def listener(name: str, seconds: float, **_: object) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        events.append(seconds)


def main() -> None:
    monitoring.register_event_duration_secs_listener(listener)
    from jaxstyle.faces import cli
    start = time.perf_counter()
    code = 0
    try:
        cli.main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
    print(f"exit {code}: {len(events)} programs, {sum(events):.2f} s compiling, "
          f"wall {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
