"""Write the dates translation task: human-readable dates in many formats -> ISO 8601.

    python corpora/make_dates.py corpora/dates

writes train.tsv (20,000 pairs), valid.tsv and test.tsv (500 each) as
`human date<TAB>YYYY-MM-DD`, the same files for the same seed. It is a translation
task a small model learns in a minute on a laptop, and a clear picture of attention:
each digit of the output looks at the word or digits of the input it comes from.
"""

from __future__ import annotations

import argparse
import datetime
import random
from pathlib import Path

MONTHS = [
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
START, END = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def render(date: datetime.date, rng: random.Random) -> str:
    """One of many ways people write a date; the numeric ones use one fixed convention
    each (slashes: month/day/year as in the US, dots: day.month.year) so the task is
    never ambiguous."""
    d, m, y = date.day, date.month, date.year
    month, mon = MONTHS[m - 1], MONTHS[m - 1][:3]
    day, dy = DAYS[date.weekday()], DAYS[date.weekday()][:3]
    forms = [
        f"{month} {d}, {y}",
        f"{d} {month} {y}",
        f"{mon} {d} {y}",
        f"{d} {mon} {y}",
        f"{day}, {month} {d}, {y}",
        f"{dy} {d} {mon} {y}",
        f"{month} {ordinal(d)}, {y}",
        f"the {ordinal(d)} of {month} {y}",
        f"{d:02d}.{m:02d}.{y}",
        f"{d}.{m}.{y}",
        f"{m}/{d}/{y}",
        f"{m:02d}/{d:02d}/{y}",
        f"{y}/{m:02d}/{d:02d}",
        f"{mon.upper()} {d:02d} {y}",
        f"{day.lower()} {month.lower()} {d} {y}",
    ]
    return rng.choice(forms)


def pairs(count: int, rng: random.Random) -> list[str]:
    span = (END - START).days
    lines = []
    for _ in range(count):
        date = START + datetime.timedelta(days=rng.randrange(span + 1))
        lines.append(f"{render(date, rng)}\t{date.isoformat()}\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="directory for train.tsv, valid.tsv, test.tsv")
    parser.add_argument("--train", type=int, default=20_000, help="training pairs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", args.train), ("valid", 500), ("test", 500)):
        (args.out / f"{name}.tsv").write_text("".join(pairs(count, rng)), encoding="utf-8")


if __name__ == "__main__":
    main()
