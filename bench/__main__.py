"""`make bench` / `python -m bench [NAME ...]`: run the named benchmarks (default: all of them).

Each benchmark module under bench/ exposes ``main(argv) -> int`` and prints GOAL lines.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

NOT_BENCHMARKS = {"goals", "http_baseline", "pgqueuer_relay"}


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if not m.name.startswith("_") and m.name not in NOT_BENCHMARKS
    )


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or available()
    failed = 0
    for name in names:
        if name not in available():
            print(f"bench: unknown benchmark {name!r}; available: {', '.join(available())}", file=sys.stderr)
            return 2
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        failed += int(module.main([a for a in argv if a.startswith("-")]) != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
