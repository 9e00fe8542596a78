"""``python -m rackwatch.contract [--check]``: write the JSON Schemas from the types, or check they are current."""

from __future__ import annotations

import sys

from . import stale_files, write_schemas


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        stale = stale_files()
        for path in stale:
            print(f"{path} is out of date: run python -m rackwatch.contract and commit it", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
