"""Write the demo corpus: the Python Language Reference that every Python carries.

`pydoc_data.topics` holds the text of the reference manual's topics (English prose
with code examples) for `help()`. Taken in sorted order, the corpus is the same on
every machine with the same Python version. Usage: python corpora/make_demo_corpus.py OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path
from pydoc_data.topics import topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    text = "\n".join(topics[name].strip() + "\n" for name in sorted(topics))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(text):,} characters of the Python Language Reference")


if __name__ == "__main__":
    main()
