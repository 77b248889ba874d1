"""Write the demo corpus: Python standard library source that every installation carries.

The files are taken in a fixed order, so the corpus is the same on every machine with the
same Python version. Usage: python corpora/make_demo_corpus.py OUT [--bytes N]
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

MODULES = [
    "argparse.py",
    "textwrap.py",
    "shlex.py",
    "fractions.py",
    "heapq.py",
    "bisect.py",
    "calendar.py",
    "string.py",
    "difflib.py",
    "csv.py",
    "fnmatch.py",
    "glob.py",
    "copy.py",
    "dataclasses.py",
    "functools.py",
    "statistics.py",
    "random.py",
    "enum.py",
    "ipaddress.py",
    "pprint.py",
    "tokenize.py",
    "configparser.py",
    "inspect.py",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--bytes", type=int, default=1_000_000, help="stop after this many bytes")
    args = parser.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for name in MODULES:
        path = stdlib / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        parts.append(text)
        size += len(text.encode())
        if size >= args.bytes:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {args.out}: {size:,} bytes from {len(parts)} standard library modules")


if __name__ == "__main__":
    main()
