"""`python -m bench <name> [args]` runs `bench/<name>_bench.py`'s `main(argv)`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """The benchmark names: every bench/<name>_bench.py module."""
    modules = pkgutil.iter_modules([str(Path(__file__).parent)])
    return sorted(m.name.removesuffix("_bench") for m in modules if m.name.endswith("_bench"))


def main(argv: list[str]) -> int:
    """Dispatch to one benchmark by name; list them when the name is missing or unknown."""
    names = available()
    if not argv or argv[0] not in names:
        print(f"usage: python -m bench {{{','.join(names)}}} [args]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}_bench")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
