"""Write one of the small tasks that `bench/sections/defaults.py` trains with seqtool's
defaults: tasks of different kinds that nobody tuned the defaults for.

    python corpora/make_tasks.py NAME DIR [--train N] [--test N] [--seed S]

writes DIR/train.*, DIR/valid.* and DIR/test.*, the same bytes for the same seed:

translation (`source<TAB>target`, .tsv; --train pairs, default 20,000; --test pairs
for valid and for test, default 500):
  numbers   integers 0..999,999 in English words -> digits
            (`forty-two thousand seven` -> `42007`)
  reverse   a random string of 4 to 20 letters and digits -> its reverse
  dates     make_dates.py's dates as people write them -> ISO 8601
  multi30k  the first --train (default 10,000) German/English pairs of Multi30k's
            train, the first --test (500) of its valid, and test2016 (first --test)

classification (.tsv `label<TAB>text`, or fastText lines in .txt):
  sst2      SST-2 as corpora/get.py writes it (the first --train / --test lines)
  questions 6 question types named as TREC's coarse classes (ABBR, DESC, ENTY, HUM,
            LOC, NUM) from templates whose first words do not give the class away,
            often decided by one noun (`Name the sculptor ...`: HUM), a quarter of
            those nouns unseen in training; --train 5,000 and --test 500 by default
  topics    fastText multi-label lines (`__label__food __label__travel text`): the
            labels are the topics whose words are mixed into the sentence (1 to 3)

generation (plain UTF-8 text, .txt; --train and --test are ignored):
  prose     tinyshakespeare: its train.txt, and valid.txt cut in two for valid/test
  code      the Python source of a fixed list of standard-library modules, read
            from the running interpreter (the same bytes for the same Python)
  greek     the demo corpus (make_demo_corpus.py: the Python Language Reference)
            written in Greek letters by a fixed letter mapping

The generation tasks are cut at line boundaries into 90% train, 5% valid, 5% test.
multi30k, sst2 and prose read ../shared/corpora (or --shared DIR), the files
corpora/get.py writes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics as reference_topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_dates  # noqa: E402 (a sibling script, not a package)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"


@dataclass(frozen=True)
class Task:
    kind: str  # translation, classification, generation
    ext: str  # of the three files: tsv or txt
    write: Callable  # (rng, args) -> {"train": lines, "valid": lines, "test": lines}
    train: int = 20_000  # default --train
    test: int = 500  # default --test


def unique(count: int, draw: Callable[[], str], seen: set[str]) -> list[str]:
    """`count` values of `draw()` that are not in `seen` (which they join)."""
    values = []
    while len(values) < count:
        value = draw()
        if value not in seen:
            seen.add(value)
            values.append(value)
    return values


def splits(rng: random.Random, args, draw: Callable[[], str], pair: Callable[[str], str]):
    """Train, valid and test lines of distinct sources: no test source is seen in training."""
    seen: set[str] = set()
    sizes = {"train": args.train, "valid": args.test, "test": args.test}
    return {name: [pair(s) for s in unique(n, draw, seen)] for name, n in sizes.items()}


# -- translation ----------------------------------------------------------------------


def wordlist(text: str) -> list[str]:
    return text.split()


ONES = wordlist(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
)
TENS = wordlist("_ _ twenty thirty forty fifty sixty seventy eighty ninety")


def words(n: int) -> str:
    """English words for 0 <= n < 1,000,000: 342517 -> three hundred forty-two
    thousand five hundred seventeen."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + words(n % 100)
        return ONES[n // 100] + " hundred" + rest
    rest = "" if n % 1000 == 0 else " " + words(n % 1000)
    return words(n // 1000) + " thousand" + rest


def numbers(rng: random.Random, args):
    def draw() -> str:  # as many 1-digit as 6-digit numbers (of those there are few)
        digits = rng.randint(1, 6)
        return str(rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits))

    return splits(rng, args, draw, lambda n: f"{words(int(n))}\t{n}")


def reverse(rng: random.Random, args):
    symbols = string.ascii_lowercase + string.digits

    def draw() -> str:
        return "".join(rng.choices(symbols, k=rng.randint(4, 20)))

    return splits(rng, args, draw, lambda s: f"{s}\t{s[::-1]}")


def dates(rng: random.Random, args):
    sizes = {"train": args.train, "valid": args.test, "test": args.test}
    return {name: [p.rstrip("\n") for p in make_dates.pairs(n, rng)] for name, n in sizes.items()}


def read_lines(path: Path, count: int | None = None) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[:count] if count is not None else lines


def multi30k(rng: random.Random, args):
    folder = args.shared / "multi30k"
    sizes = {"train": ("train", args.train), "valid": ("valid", args.test)}
    sizes["test"] = ("test2016", args.test)
    out = {}
    for name, (part, n) in sizes.items():
        de, en = read_lines(folder / f"{part}.de", n), read_lines(folder / f"{part}.en", n)
        out[name] = [f"{s}\t{t}" for s, t in zip(de, en, strict=True)]
    return out


# -- classification -------------------------------------------------------------------


def sst2(rng: random.Random, args):
    folder = args.shared / "sst2"
    counts = {"train": args.train, "valid": args.test, "test": args.test}
    return {name: read_lines(folder / f"{name}.tsv", n) for name, n in counts.items()}


# The question task is built to be as hard as real question-type classification: the
# class is decided by a few words, and those words are not all seen in training. Slots
# are filled from shared lists (people, places, things turn up in every class), and the
# CUE lists name what a question asks for (an animal: ENTY; a sculptor: HUM; a harbour:
# LOC; a century: NUM). Training questions draw their cue nouns from the first 75% of
# each list, valid and test questions from all of it: about a quarter of the nouns
# there were never seen in training; and the shared ASK templates ("Name the {cue}
# linked to ...") read the same for four classes: only the noun tells them apart, the
# way TREC's "What ..." questions do. A model must generalize from the noun (its pieces,
# its neighbours) or guess.
SLOTS = {
    "person": "the queen|the old captain|a young painter|the first astronaut|the mayor|"
    "the author|a famous chemist|the goalkeeper|the emperor|the architect|the singer|"
    "a local farmer|the inventor|the president|the detective|the bishop|a retired nurse",
    "event": "the great fire|the first moon landing|the treaty|the harvest festival|the "
    "election|the storm|the world fair|the last eclipse|the final match|the revolution|"
    "the gold rush|the flood|the coronation|the strike",
    "place": "Lisbon|the river Douro|Kyoto|the Alps|Lake Victoria|Patagonia|Oslo|the "
    "Sahara|Sicily|Quebec|the Andes|Cairo|Tasmania|the Baltic coast|Nairobi|Lima|Iceland",
    "thing": "the telescope|the violin|the printing press|the steam engine|the compass|"
    "the bicycle|the vaccine|the bridge|the novel|the painting|the clock|the satellite|"
    "the cathedral|the map|the radio",
    "verb": "invent|discover|build|paint|write|design|found|win|sign|name|lead|destroy",
    "done": "invented|discovered|built|painted|written|designed|founded|won|signed|named",
    "term": "photosynthesis|inflation|a sonnet|entropy|a haiku|democracy|a fjord|irony|"
    "a monsoon|gravity|a quorum|a metaphor|osmosis|a glacier|a tariff|a sonata|erosion",
    "abbr": "NASA|UNESCO|DNA|FIFA|NATO|RSVP|ASAP|CPU|GDP|UFO|laser|radar|scuba|AIDS|BBC|"
    "UNICEF|HTML|OPEC|LED|PhD",
    "amount": "many people|many miles|much money|many years|many islands|many rooms|"
    "many copies|many soldiers|many languages|many teeth|much water|many ships",
}
SLOTS = {name: choices.split("|") for name, choices in SLOTS.items()}
CUES = {  # what the question asks for, by class
    "ENTY": "animal|bird|fruit|instrument|language|sport|disease|drink|colour|metal|plant|"
    "dish|fabric|game|currency|flower|insect|vegetable|religion|weapon|dance|tree|spice|"
    "gemstone|cheese",
    "HUM": "writer|team|company|king|scientist|painter|poet|composer|general|explorer|"
    "family|band|novelist|pilot|senator|sculptor|philosopher|actress|violinist|"
    "astronomer|dynasty|publisher|surgeon|economist|tribe",
    "LOC": "city|country|river|mountain|island|desert|lake|region|port|valley|village|"
    "continent|ocean|street|museum|capital|province|volcano|bay|canal|harbour|glacier|"
    "peninsula|forest|county",
    "NUM": "year|century|month|day|decade|date|age|price|distance|speed|height|weight|"
    "temperature|percentage|number|depth|population|length|salary|score|altitude|"
    "duration|rate|ratio|cost",
}
CUES = {label: nouns.split("|") for label, nouns in CUES.items()}
SEEN = 0.75  # the share of each CUES list that training questions draw from
ASK = [  # the same words for every class in CUES: the cue noun alone decides
    "What {cue} is named after {person} ?",
    "Which {cue} did {person} write about ?",
    "Name the {cue} linked to {event} .",
    "What {cue} is {place} best known for ?",
    "Which {cue} is mentioned on {thing} ?",
    "What {cue} comes to mind with {event} ?",
    "Tell me the {cue} that {person} chose .",
]
QUESTIONS = {
    "ABBR": [
        "What does {abbr} stand for ?",
        "What is the full form of {abbr} ?",
        "{abbr} is short for what ?",
        "What is the abbreviation used for {term} in textbooks ?",
        "Which words make up the acronym {abbr} ?",
        "In letters , what does the abbreviation {abbr} mean ?",
        "What is {abbr} an abbreviation of ?",
    ],
    "DESC": [
        "What does {term} mean ?",
        "What is {term} ?",
        "Why did {person} {verb} {thing} ?",
        "How does {thing} work ?",
        "Why is {place} famous ?",
        "What is the difference between {term} and {term} ?",
        "How did {person} {verb} {thing} ?",
        "In simple words , what is meant by {term} ?",
        "Which reasons led {person} to leave {place} ?",
        "What is {thing} used for ?",
    ],
    "ENTY": [
        "What {cue} did {person} like best ?",
        "Which {cue} is most common in {place} ?",
        "What is the national {cue} of {place} ?",
        "What kind of {cue} is shown in {thing} ?",
        "What was {thing} made of ?",
    ],
    "HUM": [
        "Who {done} {thing} ?",
        "Which {cue} {done} {thing} ?",
        "What was the name of {person} who {done} {thing} ?",
        "Who led {event} ?",
        "In {place} , who {done} {thing} ?",
        "What {cue} was born in {place} ?",
    ],
    "LOC": [
        "Where was {thing} {done} ?",
        "Where did {event} take place ?",
        "What {cue} is {place} in ?",
        "Which {cue} did {person} come from ?",
        "In which {cue} is {thing} kept today ?",
        "Where can one see {thing} ?",
    ],
    "NUM": [
        "When was {thing} {done} ?",
        "In which {cue} did {event} happen ?",
        "How {amount} live in {place} ?",
        "How old was {person} during {event} ?",
        "How {amount} did {person} need for {thing} ?",
        "How far is {place} from {place} ?",
        "What was the {cue} of {thing} ?",
    ],
}


def question(rng: random.Random, unseen: bool) -> str:
    """One `LABEL<TAB>question` line; `unseen`: cue nouns from the whole list, not only
    from the part training sees."""
    label = rng.choice(sorted(QUESTIONS))
    templates = QUESTIONS[label] + (ASK if label in CUES else [])
    template = rng.choice(templates)
    nouns = CUES.get(label, [])
    nouns = nouns if unseen else nouns[: round(SEEN * len(nouns))]
    parts = template.split("{")
    text = parts[0]
    for slot, rest in (part.split("}", 1) for part in parts[1:]):
        text += rng.choice(nouns if slot == "cue" else SLOTS[slot]) + rest
    return f"{label}\t{text[0].upper()}{text[1:]}"


def questions(rng: random.Random, args):
    """Distinct questions in each split; valid and test may ask for unseen cue nouns."""
    seen: set[str] = set()
    sizes = {"train": args.train, "valid": args.test, "test": args.test}
    return {
        name: unique(n, lambda name=name: question(rng, name != "train"), seen)
        for name, n in sizes.items()
    }


TOPICS = {
    "food": wordlist("bread soup cheese pepper oven recipe garlic baker dinner spoon noodles"),
    "music": wordlist("guitar melody drums choir concert chord singer violin rhythm album"),
    "sport": wordlist("goal referee stadium sprint tennis coach league medal striker racket"),
    "travel": wordlist("airport passport hotel luggage ferry train ticket suitcase tourist map"),
    "science": wordlist("atom telescope molecule laboratory experiment gene orbit neuron"),
    "money": wordlist("bank loan salary invoice budget tax coin interest market profit"),
}
FILLER = wordlist(
    "the a of and to in on at with for we they it was is after before then every "
    "yesterday today some many small big old new good quiet long short our their "
    "saw found talked about wanted needed liked had made took brought near around"
)


def topic_line(rng: random.Random) -> str:
    chosen = sorted(rng.sample(sorted(TOPICS), rng.choices([1, 2, 3], [5, 4, 1])[0]))
    tokens = [rng.choice(FILLER) for _ in range(rng.randint(6, 14))]
    for topic in chosen:
        for word in rng.sample(TOPICS[topic], rng.randint(1, 3)):
            tokens.insert(rng.randrange(len(tokens) + 1), word)
    return " ".join([*(f"__label__{t}" for t in chosen), *tokens])


def topics(rng: random.Random, args):
    return splits(rng, args, lambda: topic_line(rng), lambda line: line)


# -- generation -----------------------------------------------------------------------


def cut(text: str) -> dict[str, list[str]]:
    """90% / 5% / 5% of the lines."""
    lines = text.splitlines()
    a, b = int(len(lines) * 0.9), int(len(lines) * 0.95)
    return {"train": lines[:a], "valid": lines[a:b], "test": lines[b:]}


def prose(rng: random.Random, args):
    folder = args.shared / "tinyshakespeare"
    valid = read_lines(folder / "valid.txt")
    half = len(valid) // 2
    return {"train": read_lines(folder / "train.txt"), "valid": valid[:half], "test": valid[half:]}


MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib", "enum", "fnmatch",
    "fractions", "functools", "gettext", "glob", "heapq", "inspect", "ipaddress", "json",
    "locale", "logging", "operator", "optparse", "pathlib", "pprint", "queue", "random",
    "shlex", "shutil", "statistics", "string", "tempfile", "textwrap", "threading",
    "tokenize", "typing", "uuid", "warnings", "zipfile",
)  # fmt: skip


def code(rng: random.Random, args):
    sources = []
    for name in MODULES:
        module = importlib.import_module(name)
        path = Path(inspect.getsourcefile(module))
        sources.append(path.read_text(encoding="utf-8"))
    return cut("\n".join(sources))


# Latin -> Greek letters; digraphs first (th -> θ, ps -> ψ), final s -> ς
DIGRAPHS = {"th": "θ", "ph": "φ", "ps": "ψ", "ch": "χ", "ks": "ξ", "ou": "υ"}
LETTERS = dict(zip("abcdefghijklmnopqrstuvwxyz", "αβκδεφγηιικλμνοπκρστυβωξυζ", strict=True))


def greek_word(match: str) -> str:
    out, i = [], 0
    lower = match.lower()
    while i < len(lower):
        pair = lower[i : i + 2]
        letter = DIGRAPHS.get(pair) if len(pair) == 2 else None
        step = 2 if letter else 1
        letter = letter or LETTERS.get(lower[i], lower[i])
        if lower[i] == "s" and (i + 1 == len(lower) or not lower[i + 1].isalpha()):
            letter = "ς"
        out.append(letter.upper() if match[i].isupper() else letter)
        i += step
    return "".join(out)


def to_greek(text: str) -> str:
    return " ".join(greek_word(token) for token in text.split(" "))


def greek(rng: random.Random, args):
    text = "\n".join(reference_topics[name].strip() + "\n" for name in sorted(reference_topics))
    return cut("\n".join(to_greek(line) for line in text.splitlines()))


TASKS = {
    "numbers": Task("translation", "tsv", numbers),
    "reverse": Task("translation", "tsv", reverse),
    "dates": Task("translation", "tsv", dates),
    "multi30k": Task("translation", "tsv", multi30k, train=10_000),
    "sst2": Task("classification", "tsv", sst2, train=None, test=None),
    "questions": Task("classification", "tsv", questions, train=5_000),
    "topics": Task("classification", "txt", topics, train=5_000),
    "prose": Task("generation", "txt", prose),
    "code": Task("generation", "txt", code),
    "greek": Task("generation", "txt", greek),
}


def write(name: str, out: Path, train: int | None = None, test: int | None = None,
          seed: int = 1, shared: Path = SHARED) -> dict[str, Path]:  # fmt: skip
    """Write task `name` into `out`; returns {"train": path, "valid": path, "test": path}."""
    task = TASKS[name]
    args = argparse.Namespace(
        train=task.train if train is None else train,
        test=task.test if test is None else test,
        shared=shared,
    )
    parts = task.write(random.Random(seed), args)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, lines in parts.items():
        paths[part] = out / f"{part}.{task.ext}"
        paths[part].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(TASKS))
    parser.add_argument("out", type=Path, help="directory for train.*, valid.*, test.*")
    parser.add_argument("--train", type=int, help="training lines (the task's default)")
    parser.add_argument("--test", type=int, help="valid and test lines (the task's default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shared", type=Path, default=SHARED, help="corpora/get.py's output")
    args = parser.parse_args()
    paths = write(args.name, args.out, args.train, args.test, args.seed, args.shared)
    for path in paths.values():
        lines = path.read_text(encoding="utf-8").count("\n")
        print(f"wrote {path}: {lines:,} lines ({TASKS[args.name].kind})")


if __name__ == "__main__":
    main()
