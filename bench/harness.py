"""What every benchmark section shares: the sizes, running and timing a child process,
figures and their targets, the machine's description and the Markdown report.

A section is a module in bench/sections/ with a TITLE and `measure(sec, sizes, out)`,
which runs its children with `run` and records figures with `sec.add`.
"""

from __future__ import annotations

import json
import operator
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("../shared")  # relative to ROOT, the working directory
CORPUS = SHARED / "corpora" / "tinyshakespeare"
TRAIN, VALID = CORPUS / "train.txt", CORPUS / "valid.txt"
REF_TRAIN = SHARED / "bench" / "ref_charlstm.py"
REF_SAMPLE = SHARED / "bench" / "ref_sample.py"
SST2 = SHARED / "corpora" / "sst2"
MULTI30K = SHARED / "corpora" / "multi30k"
CHILD_TIMEOUT = 2 * 3600  # seconds; a hung child must not hang the whole benchmark


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each section runs: FULL for BENCHMARKS.md, QUICK for a smoke test."""

    hidden: int  # throughput model (and the sampling checkpoint)
    ref_steps: int  # ref_charlstm.py --steps in throughput
    steps: int  # seqtool --max-steps in throughput
    log_every: int
    sample_length: int  # chars: sampling, and library's `generate --length`
    quality_seconds: int
    quality_hidden: tuple[int, int]  # the two reference sizes
    quality_extra: tuple[str, ...]  # extra seqtool options (none: seqtool's defaults)
    memory_mb: int
    repeats: int  # startup and library timings, median of this many
    seeds: int  # classifier: seeds averaged
    classifier_extra: tuple[str, ...]  # classifier: options beyond seqtool's defaults
    stream_lines: int  # classifier and translator: lines piped through from stdin
    translation_time: str  # translator training budget
    translation_extra: tuple[str, ...]  # translator: options beyond seqtool's defaults
    library_steps: int  # library: --max-steps of its three models (speed ignores quality)
    library_extra: tuple[str, ...]  # library: options for its three models beyond defaults
    library_lines: int | None  # library: test sentences classified / translated (None: all)
    defaults_scale: float  # defaults: share of each task's --max-time (below 0.5: tuned always)
    defaults_data: tuple[str, ...]  # defaults: corpora/make_tasks.py options (sizes)
    serve_train_time: str  # serve: the translator's training budget
    serve_extra: tuple[str, ...]  # serve: options of its three models beyond the defaults
    serve_sentences: int | None  # serve: test sentences sent (None: all)
    serve_requests: int  # serve: classify requests over which memory must stay flat
    inspect_chars: int  # inspect: characters of text inspected
    quantize_train: tuple[
        str, str, str
    ]  # quantize: --max-time of translator, classifier, generator
    quantize_extra: tuple[str, ...]  # quantize: options of its three models beyond the defaults
    peers_time: str  # peers: the training budget of seqtool's translator and Marian's


FULL = Sizes(
    hidden=512,
    ref_steps=60,
    steps=300,
    log_every=10,
    sample_length=2000,
    quality_seconds=600,
    quality_hidden=(256, 512),
    quality_extra=(),
    memory_mb=1000,
    repeats=5,
    seeds=3,
    classifier_extra=(),
    stream_lines=100_000,
    translation_time="45m",
    translation_extra=(),
    library_steps=20,
    library_extra=(),
    library_lines=None,
    defaults_scale=1.0,
    defaults_data=(),
    serve_train_time="2m",
    serve_extra=(),
    serve_sentences=None,
    serve_requests=20_000,
    inspect_chars=10_000,
    quantize_train=("3m", "1m", "1m"),
    quantize_extra=(),
    peers_time="45m",
)
# fmt: off
QUICK = Sizes(
    hidden=64,
    ref_steps=5,
    steps=30,
    log_every=5,
    sample_length=200,
    quality_seconds=5,
    quality_hidden=(32, 64),
    quality_extra=("--hidden-size", "64"),
    memory_mb=5,
    repeats=3,
    seeds=2,
    classifier_extra=("--max-steps", "20", "--hidden-size", "16"),
    stream_lines=3000,
    translation_time="20s",
    # a loaded machine may take fewer than the default 25 steps (one log window) in 20 s
    translation_extra=(
        "--hidden-size", "32", "--embedding-size", "32", "--eval-every", "50", "--log-every", "5",
    ),
    library_steps=3,
    library_extra=("--hidden-size", "32", "--embedding-size", "32"),
    library_lines=100,
    defaults_scale=0.02,
    defaults_data=("--train", "1000", "--test", "50"),
    serve_train_time="10s",
    serve_extra=("--hidden-size", "32", "--embedding-size", "32"),
    serve_sentences=100,
    serve_requests=400,
    inspect_chars=500,
    quantize_train=("10s", "5s", "5s"),
    quantize_extra=("--hidden-size", "32", "--embedding-size", "32"),
    peers_time="20s",
)
# fmt: on


@dataclass
class Figure:
    name: str
    unit: str
    seqtool: float | str | None
    reference: float | None = None
    ratio: float | None = None  # seqtool / reference
    target: str = ""  # "ratio >= 1.0", "deviation <= 0.02", "value < 2048", "value is no"
    met: bool | None = None
    commands: list[str] = field(default_factory=list)  # labels into Section.commands


@dataclass
class Section:
    name: str
    title: str
    date: str = ""
    seconds: float = 0.0
    quick: bool = False
    figures: list[Figure] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)  # label -> shell command
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, name, unit, value, reference=None, target="", commands=()) -> None:
        """Record a figure; the ratio is value / reference, the target is checked."""
        fig = Figure(name, unit, value, reference, target=target, commands=list(commands))
        if isinstance(value, float) and reference:
            fig.ratio = value / reference
        fig.met = check_target(fig)
        self.figures.append(fig)


@dataclass
class Child:
    """A finished child process."""

    command: str
    stdout: str
    stderr: str
    wall: float  # seconds
    max_rss_mb: float  # peak resident set size, MiB


class BenchError(Exception):
    pass


# -- running children -----------------------------------------------------------------


def display_path(path: Path) -> str:
    """`path` relative to ROOT when it lies inside, so that commands read as typed there."""
    path = path.absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


PYTHON = display_path(Path(sys.executable))
_SEQTOOL_BIN = Path(sys.executable).parent / "seqtool"
SEQTOOL = [display_path(_SEQTOOL_BIN)] if _SEQTOOL_BIN.exists() else [PYTHON, "-m", "seqtool"]
SELF = [PYTHON, "bench/run.py"]


def run(
    argv: list,
    timeout: float = CHILD_TIMEOUT,
    stdin: Path | None = None,
    env: dict[str, str] | None = None,
    codes: tuple[int, ...] = (0,),
) -> Child:
    """Run a child to completion; wall time and peak RSS (os.wait4's ru_maxrss, KiB on
    Linux) are its own. Output goes to temporary files, so nothing blocks on a pipe.
    `env` is added to this process's environment and shown before the command; an exit
    code outside `codes` raises BenchError."""
    argv = [str(a) for a in argv]
    assignments = [f"{key}={value}" for key, value in (env or {}).items()]
    command = shlex.join(assignments + argv) + (f" < {stdin}" if stdin else "")
    log(f"  $ {command}")
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        stdin.open("rb") if stdin else open(os.devnull, "rb") as source,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, stdin=source, env={**os.environ, **(env or {})}
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode not in codes:
        code = proc.returncode
        ended = f"exited with {code}"
        if code < 0:
            ended = f"was killed by signal {-code} ({signal.strsignal(-code)})"
        tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:])
        raise BenchError(f"`{command}` {ended}" + (f": {tail}" if tail else ""))
    return Child(command, stdout, stderr, wall, usage.ru_maxrss / 1024)


def side_python(sec: Section, out: Path, name: str, packages: list[str], check: str) -> str | None:
    """A Python for a peer that is never seqtool's dependency: a virtual environment at
    out/NAME with `packages`, made once and kept; `check` (Python code) must then run in
    it. None, with a note saying why, when it cannot be had (offline, a package that
    does not install)."""
    python = out / name / "bin" / "python"
    try:
        if not python.exists():
            run([PYTHON, "-m", "venv", out / name])
        sec.commands[f"{name}_install"] = run(
            [python, "-m", "pip", "install", "--quiet", *packages]
        ).command
        run([python, "-c", check])
    except BenchError as err:
        sec.notes.append(
            f"{' '.join(packages)} could not be installed, so its rows are absent: {err}"
        )
        return None
    return display_path(python)


FASTTEXT = "fasttext-wheel==0.9.2"  # the classifiers' reference; never seqtool's dependency


def fasttext(sec: Section, out: Path, files: dict, work: Path, label: str) -> dict | None:
    """fastText tuned on files["valid"] by bench/fasttext_ref.py's grid and scored on
    files["test"], in this run: its report (test_accuracy a fraction, setting,
    train_seconds, ...). It runs in this Python when that has fasttext, else in
    out/fasttext-env; None, with a note, when neither can be had (offline, say)."""
    try:
        run([PYTHON, "-c", "import fasttext"])
        python = PYTHON
    except BenchError:
        python = side_python(sec, out, "fasttext-env", [FASTTEXT], "import fasttext")
    if python is None:
        return None
    ref = run([
        python, "bench/fasttext_ref.py", "--train", files["train"], "--valid", files["valid"],
        "--test", files["test"], "--work", work, *(["--quick"] if sec.quick else []),
    ])  # fmt: skip
    sec.commands[label] = ref.command
    return last_json(ref.stdout)


@contextmanager
def worktree(sec: Section, tree: Path, revision: str) -> Iterator[str]:
    """`revision` checked out at `tree` (`git worktree add --detach`) for the duration,
    and removed afterwards, also when an interrupted run left one behind; yields the
    short hash. Its code runs as `PYTHONPATH=TREE python -P -m seqtool` (SEQTOOL_P)."""

    def remove() -> None:
        listed = run(["git", "worktree", "list", "--porcelain"]).stdout.splitlines()
        if f"worktree {tree.resolve()}" in listed:
            run(["git", "worktree", "remove", "--force", display_path(tree)])
        shutil.rmtree(tree, ignore_errors=True)

    remove()
    rev = run(["git", "rev-parse", "--short", f"{revision}^{{commit}}"]).stdout.strip()
    subject = run(["git", "log", "-1", "--format=%s", rev]).stdout.strip()
    sec.notes.append(f"baseline {rev}: {subject}")
    sec.commands["worktree"] = run(["git", "worktree", "add", "--detach", tree, rev]).command
    try:
        check_imports("baseline", display_path(tree))
        yield rev
    finally:
        remove()


def check_imports(side: str, tree: str) -> None:
    """Raise unless `PYTHONPATH=TREE python -P` imports seqtool from `tree` (a path
    relative to ROOT): a baseline that ran the current code would compare it with itself."""
    code = [PYTHON, "-P", "-c", "import seqtool; print(seqtool.__file__)"]
    where = run(code, env={"PYTHONPATH": tree}).stdout.split()[-1]
    if Path(where).resolve() != (ROOT / tree / "seqtool" / "__init__.py").resolve():
        raise BenchError(f"the {side} side imports seqtool from {where}, not {tree}")


# -P: without it python puts the working directory (ROOT, the current checkout) first on
# sys.path, ahead of PYTHONPATH, and a baseline would run the current code
SEQTOOL_P = [PYTHON, "-P", "-m", "seqtool"]


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_models(
    sec: Section, work: Path, data: dict[str, list], extra: Iterable = ()
) -> dict[str, Path]:
    """`seqtool train TASK ARGS... --out work/NAME --force EXTRA...` for each NAME: (TASK,
    *ARGS) of `data`, its command recorded as `train_NAME`; NAME -> its run directory."""
    paths = {}
    for name, (task, *args) in data.items():
        paths[name] = work / name
        child = run([*SEQTOOL, "train", task, *args, "--out", paths[name], "--force", *extra])
        sec.commands[f"train_{name}"] = child.command
    return paths


def key_values(text: str) -> dict[str, float]:
    """`steps=60 chars_per_s=1234 ...` (the reference scripts' last line) -> dict."""
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-+\d.eE]+)", text)}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def read_metrics(run_dir: Path, speed: str = "chars_per_s") -> tuple[list[dict], list[dict]]:
    """RUN/metrics.jsonl -> (log records, validation records)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if speed in r]
    evals = [r for r in records if r.get("split") == "valid"]
    return logs, evals


OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def check_target(fig: Figure) -> bool | None:
    if not fig.target:
        return None
    subject, op, bound = fig.target.split()
    if subject == "value":
        value = fig.seqtool
    elif fig.ratio is None:
        return None
    else:
        value = fig.ratio if subject == "ratio" else abs(fig.ratio - 1)
    if value is None:
        return None
    if op == "is":
        return str(value) == bound
    return bool(OPS[op](float(value), float(bound)))


def run_section(
    name: str,
    title: str,
    measure: Callable[[Section, Sizes, Path], None],
    sizes: Sizes,
    out: Path,
    quick: bool,
) -> Section:
    """Run one section; an error is recorded in it, not raised."""
    sec = Section(name, title, date=now(), quick=quick)
    log(f"[{name}] {title}")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        measure(sec, sizes, out)
    except Exception as err:  # one failed section must not lose the others
        if not isinstance(err, BenchError):
            traceback.print_exc()
        sec.error = f"{type(err).__name__}: {err}"
        log(f"[{name}] FAILED: {sec.error}")
    sec.seconds = time.perf_counter() - start
    # other work on the machine skews every figure (oversubscribed OpenMP threads badly)
    sec.notes.append(
        f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"figures are only trustworthy on an otherwise idle machine"
    )
    log(f"[{name}] done in {sec.seconds:.0f} s")
    return sec


# -- the machine and the report -------------------------------------------------------


def environment() -> dict:
    cpu, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    versions = "import torch; print(torch.__version__, torch.get_num_threads())"
    torch_version, threads = run([PYTHON, "-c", versions]).stdout.split()[-2:]
    git = ["git", "describe", "--always", "--dirty"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": now(),
        "cpu": cpu,
        "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch_version,
        "threads": int(threads),
        "python": sys.version.split()[0],
        "commit": commit or "unknown",
    }


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def render(results: dict, order: Iterable[str], quick: bool) -> str:
    """results.json's content -> BENCHMARKS.md, its sections in `order` (names)."""
    env = results["env"]
    hw = ", ".join(env["bf16_flags"]) or "none"
    lines = [
        "# seqtool benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python bench/run.py --out BENCHMARKS.md`). Each "
        "figure is measured beside its reference in the same run on the same machine; ratio "
        "is seqtool / reference; `--only NAME` reruns one section (names are the headings).",
        "",
    ]
    if quick:
        lines += ["**Quick smoke run (`--quick`): tiny sizes, the figures mean nothing.**", ""]
    lines += [
        "| machine | |",
        "|---|---|",
        f"| date | {env['date']} |",
        f"| CPU | {env['cpu']} (bf16 flags: {hw}) |",
        f"| cores | {env['cores']} ({env['usable_cores']} usable) |",
        f"| torch | {env['torch']} |",
        f"| torch threads | {env['threads']} |",
        f"| python | {env['python']} |",
        f"| seqtool commit | {env['commit']} |",
        "",
    ]
    # the hand-written reading of the figures (decisions taken from them) comes first
    analysis = ROOT / "bench" / "analysis.md"
    if analysis.exists() and not quick:
        lines += [analysis.read_text().strip(), ""]
    for name in order:
        sec = results["sections"].get(name)
        if sec is None:
            continue
        lines += [f"## {name}: {sec['title']}", ""]
        lines += [f"Measured {sec['date']} in {sec['seconds']:.0f} s.", ""]
        if sec["error"]:
            lines += [f"**Failed:** {sec['error']}", ""]
        if sec["figures"]:
            lines += [
                "| figure | seqtool | reference | ratio | target | met | commands |",
                "|---|---:|---:|---:|---|---|---|",
            ]
            for fig in sec["figures"]:
                unit = f" ({fig['unit']})" if fig["unit"] else ""
                met = {True: "yes", False: "**no**", None: "-"}[fig["met"]]
                ratio = "-" if fig["ratio"] is None else f"{fig['ratio']:.3f}"
                commands = ", ".join(f"`{c}`" for c in fig["commands"])
                lines.append(
                    f"| {fig['name']}{unit} | {fmt(fig['seqtool'])} | "
                    f"{fmt(fig['reference'])} | {ratio} | {fig['target'] or '-'} | {met} | "
                    f"{commands} |"
                )
            lines.append("")
        if sec["commands"]:
            lines += ["Commands (from the repository root):", ""]
            lines += [f"- `{label}`: `{cmd}`" for label, cmd in sec["commands"].items()]
            lines.append("")
        if sec["notes"]:
            lines += ["Notes:", ""]
            lines += [f"- {note}" for note in sec["notes"]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def splice(report: str, fresh: str, names: Iterable[str], order: Iterable[str]) -> str:
    """`report` (an earlier BENCHMARKS.md) with the sections `names` taken from `fresh`
    (a render of this run), the others as written: what `--only` writes."""
    headings = "|".join(re.escape(name) for name in order)
    section = re.compile(rf"^## ({headings}): .*?(?=^## (?:{headings}): |\Z)", re.M | re.S)
    have = {m.group(1): m.group(0) for m in section.finditer(report)}
    new = {m.group(1): m.group(0) for m in section.finditer(fresh)}
    for name in names:
        if name in have:  # a blank line before the next section's heading
            report = report.replace(have[name], new[name].rstrip("\n") + "\n\n")
        else:
            report = report.rstrip("\n") + "\n\n" + new[name]
    return report.rstrip("\n") + "\n"
