"""Every command block of README.md runs as written, in order, and exits 0.

The README's convention for fenced blocks:

- ```bash (or ```sh): commands, one a line; a line ending in `\\` goes on on the next;
  `#` comments as in bash. Each command is run.
- ```console: commands and what they print: lines starting with `$ ` are commands (with
  `\\` continuations), run as above; the other lines are output, shown, not compared
  (the README's figures come from long runs on the real corpora).
- ```text (output, listings) and ```python (run by tests/test_api.py) are not run here.
  Every fence must name one of these languages, so that a command block cannot escape
  this test by naming none.
- `<!-- readme-test: skip (REASON) -->` on the line just before a fence skips that block.
  The reason is required. It marks what cannot run here: installing into a virtual
  environment, downloads, two machines at once, make targets that run the whole suite.

How they run: in README order, in one temporary directory that holds a copy of the
repository's `corpora/` and `bench/` scripts (the directories the commands name), each
command in its own `bash -o pipefail -c`, with the Python of this test's virtual
environment first on PATH, stdin from /dev/null and OMP_NUM_THREADS=1 (unless set). A
variable that a command exports is seen by the commands after it.

What is changed, so that the whole README (about 60 commands, most of them a second or
two of starting torch) runs in one to two minutes on 2 cores:

- data: `corpora/get.py` downloads (a skipped block); tiny stand-ins with the same file
  names and formats are written to `data/` first: some hundred lines each of a
  play-like text, aligned German/English sentences and labelled review snippets.
- budgets: every `seqtool train TASK` (under torchrun too) gets `--max-steps 3` in
  place of its `--max-time`, `--max-steps` or `--max-epochs` (a classifier that names
  no budget gets it as well). Nothing else in a command is changed: the model sizes
  are the defaults or the README's own.
- `seqtool serve`: started in the background on a free port, and the README's port
  (8000 unless `--port` names another) is replaced by that port in later commands; the
  test waits for `/health` before going on. A server runs until a later one takes the
  same README port, or to the end, and must then stop with exit code 0 on SIGTERM.
- `curl` gets `--fail-with-body`, so that an HTTP error fails the test.

`test_a_broken_command_fails` checks that the runner fails on a misspelt option, and
`test_the_convention` the parser, on a README of its own.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"bash", "sh", "console", "text", "python"}
RUN = {"bash", "sh", "console"}
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
TINY_BUDGET = "--max-steps 3"
COMMAND_TIMEOUT = 300  # seconds; a command that takes longer is a failure
HEALTH_TIMEOUT = 90


@dataclass
class Block:
    line: int  # of the opening fence, from 1
    language: str
    commands: list[str]
    skip: str | None = None  # the reason, for a skipped block


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a README, with the commands of those that hold commands."""
    lines = text.split("\n")
    found = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        language, start = opening.group(1), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{start + 1}: a fence that is never closed"
        assert language in LANGUAGES, (
            f"README.md:{start + 1}: the fence names {language or 'no language'}; "
            f"name one of {', '.join(sorted(LANGUAGES))} (tests/test_readme.py)"
        )
        marker = SKIP.search(lines[start - 1]) if start else None
        skip = None
        if marker:
            skip = (marker.group("reason") or "").strip()
            assert skip, f"README.md:{start}: a readme-test skip marker needs a (reason)"
        body = lines[start + 1 : end]
        commands = split_commands(body, console=language == "console") if language in RUN else []
        found.append(Block(start + 1, language, commands, skip))
        i = end + 1
    return found


def split_commands(body: list[str], console: bool) -> list[str]:
    """One string per command: continuation lines joined; comment lines, blank lines
    and (in a console block) output lines dropped."""
    commands: list[str] = []
    current: list[str] | None = None
    for line in body:
        if current is not None:  # the line before ended in a backslash
            current.append(line)
        elif console:
            if not line.startswith("$ "):
                continue  # output
            current = [line[2:]]
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        else:
            current = [line]
        if not line.endswith("\\"):
            commands.append("\n".join(current))
            current = None
    assert current is None, "a command ends in a backslash at the end of its block"
    return commands


# -- rewrites ----------------------------------------------------------------------------

TRAIN = re.compile(r"(\bseqtool train [a-z]+)")
BUDGET = re.compile(r"\s--max-(?:time|steps|epochs)[ =]\S+")
SERVE = re.compile(r"^\s*seqtool serve\b")
PORT = re.compile(r"\s--port[ =](\d+)")
ADDRESS = re.compile(r"\b(localhost|127\.0\.0\.1):(\d+)\b")


def tiny_budget(command: str) -> str:
    if not TRAIN.search(command):
        return command
    budget = TINY_BUDGET
    if "--average-last" in command and "--eval-every" not in command:
        budget += " --eval-every 1"  # an evaluation per step, so that there are some to average
    return TRAIN.sub(rf"\1 {budget}", BUDGET.sub("", command), count=1)


def with_ports(command: str, ports: dict[int, int]) -> str:
    return ADDRESS.sub(
        lambda m: f"{m.group(1)}:{ports.get(int(m.group(2)), int(m.group(2)))}", command
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- running -----------------------------------------------------------------------------


@dataclass
class Shell:
    """Runs README commands one after another in `cwd`, carrying exported variables."""

    cwd: Path
    env: dict[str, str]
    servers: dict[int, tuple[int, subprocess.Popen]] = field(default_factory=dict)
    times: list[tuple[float, str]] = field(default_factory=list)

    def run(self, command: str, where: str) -> None:
        ports = {readme: port for readme, (port, _) in self.servers.items()}
        command = with_ports(tiny_budget(command), ports)
        if SERVE.match(command):
            return self.serve(command, where)
        command = re.sub(r"^(\s*)curl\b", r"\1curl --fail-with-body", command)
        env_file = self.cwd / ".readme-test-env"
        script = f'{command}\n__status=$?\nenv -0 > "{env_file}"\nexit $__status\n'
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", script],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        self.times.append((time.monotonic() - started, command))
        assert result.returncode == 0, (
            f"{where}: exit code {result.returncode} from\n{command}\n"
            f"-- stdout --\n{result.stdout[-3000:]}\n-- stderr --\n{result.stderr[-3000:]}"
        )
        if env_file.exists():
            pairs = env_file.read_text().split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)

    def serve(self, command: str, where: str) -> None:
        found = PORT.search(command)
        readme_port = int(found.group(1)) if found else 8000
        if readme_port in self.servers:
            self.stop(readme_port, where)
        port = free_port()
        if found:
            command = PORT.sub(f" --port {port}", command, count=1)
        else:
            command = SERVE.sub(f"seqtool serve --port {port}", command, count=1)
        log = open(self.cwd / f".serve-{readme_port}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.servers[readme_port] = (port, process)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop(readme_port, where)
        raise AssertionError(f"{where}: the server never answered /health\n{command}")

    def stop(self, readme_port: int, where: str) -> None:
        port, process = self.servers.pop(readme_port)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        log = (self.cwd / f".serve-{readme_port}.log").read_text(errors="replace")
        assert status == 0, f"{where}: the server on port {port} ended with {status}\n{log[-3000:]}"

    def close(self, where: str, check: bool = True) -> None:
        for readme_port in list(self.servers):
            if check:
                self.stop(readme_port, where)
            else:  # a command failed already: say that, not how the server ended
                self.servers.pop(readme_port)[1].kill()


def shell(tmp_path: Path) -> Shell:
    for name in ("corpora", "bench"):
        shutil.copytree(
            ROOT / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("out", "dates", "demo.txt", "__pycache__"),
        )
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SEQTOOL_API_KEY", None)
    # one thread per command unless told otherwise: the commands are small, and two
    # processes each spinning two OpenMP threads on 2 busy cores slow each other down
    env.setdefault("OMP_NUM_THREADS", "1")
    return Shell(tmp_path, env)


# -- stand-ins for the downloaded corpora ------------------------------------------------

SPEAKERS = ["ROMEO", "JULIET", "NURSE", "MERCUTIO", "FRIAR LAURENCE"]
WORDS = [
    "what", "say", "you", "to", "the", "night", "my", "lord", "and", "love", "is", "but",
    "a", "dream", "of", "fair", "day", "sweet", "come", "hence", "good", "sir", "I",
    "pray", "thee", "tell", "me", "where", "she", "lies",
]  # fmt: skip
SUBJECTS = [
    ("Ein Hund", "A dog"), ("Eine Frau", "A woman"), ("Ein Mann", "A man"),
    ("Ein Kind", "A child"), ("Ein Junge", "A boy"), ("Ein Mädchen", "A girl"),
]  # fmt: skip
VERBS = [("rennt", "runs"), ("springt", "jumps"), ("sitzt", "sits"), ("spielt", "plays")]
PLACES = [
    ("durch den Schnee", "through the snow"), ("im Park", "in the park"),
    ("auf der Straße", "on the street"), ("am Strand", "on the beach"),
    ("im Wasser", "in the water"),
]  # fmt: skip
GOOD = ["gorgeous", "witty", "moving", "funny", "smart", "warm"]
BAD = ["awful", "dull", "boring", "clumsy", "tedious", "flat"]
NOUNS = ["film", "movie", "plot", "script", "story", "cast"]


def write_stand_ins(root: Path) -> None:
    """data/ as corpora/get.py writes it, each file small."""
    rng = random.Random(0)
    shakes = root / "data" / "tinyshakespeare"
    shakes.mkdir(parents=True)
    speeches = []
    for _ in range(300):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
        speeches.append(f"{rng.choice(SPEAKERS)}:\n{line.capitalize()}.\n\n")
    text = "".join(speeches)
    cut = int(0.9 * len(text))
    for name, part in (("input", text), ("train", text[:cut]), ("valid", text[cut:])):
        (shakes / f"{name}.txt").write_text(part, encoding="utf-8")

    multi30k = root / "data" / "multi30k"
    multi30k.mkdir()
    pairs = [
        (f"{s[0]} {v[0]} {p[0]}.", f"{s[1]} {v[1]} {p[1]}.")
        for s in SUBJECTS
        for v in VERBS
        for p in PLACES
    ]
    for name, count in (("train", 200), ("valid", 20), ("test2016", 20)):
        chosen = [rng.choice(pairs) for _ in range(count)]
        for side, lang in ((0, "de"), (1, "en")):
            lines = "".join(pair[side] + "\n" for pair in chosen)
            (multi30k / f"{name}.{lang}").write_text(lines, encoding="utf-8")

    sst2 = root / "data" / "sst2"
    sst2.mkdir()
    for name, count in (("train", 200), ("valid", 40), ("test", 40)):
        lines = []
        for _ in range(count):
            label, words = rng.choice((("positive", GOOD), ("negative", BAD)))
            noun = rng.choice(NOUNS)
            text = rng.choice(
                [f"a {rng.choice(words)} , {rng.choice(words)} {noun}",
                 f"the {noun} was {rng.choice(words)}"]
            )  # fmt: skip
            lines.append(f"{label}\t{text}\n")
        (sst2 / f"{name}.tsv").write_text("".join(lines), encoding="utf-8")


# -- tests -------------------------------------------------------------------------------


def test_the_convention():
    text = (
        "intro\n```bash\nseqtool info a   # a comment\n# a comment line\n\n"
        "seqtool train generator --train x \\\n    --out y --max-time 10m\n```\n"
        "<!-- readme-test: skip (needs a GPU) -->\n```sh\nseqtool generate a\n```\n"
        '```console\n$ seqtool info a --json\n{"task": "generator"}\n```\n'
        "```text\nnot a command\n```\n"
    )
    found = blocks(text)
    assert [b.language for b in found] == ["bash", "sh", "console", "text"]
    assert found[0].commands == [
        "seqtool info a   # a comment",
        "seqtool train generator --train x \\\n    --out y --max-time 10m",
    ]
    assert found[1].skip == "needs a GPU"
    assert found[2].commands == ["seqtool info a --json"]
    assert found[3].commands == []
    assert tiny_budget(found[0].commands[1]) == (
        "seqtool train generator --max-steps 3 --train x \\\n    --out y"
    )
    assert with_ports("curl -s localhost:8000/v1/models", {8000: 5}) == (
        "curl -s localhost:5/v1/models"
    )
    with pytest.raises(AssertionError, match="names no language"):
        blocks("```\nmake demo\n```\n")
    with pytest.raises(AssertionError, match="needs a"):
        blocks("<!-- readme-test: skip -->\n```bash\nmake demo\n```\n")


def test_a_broken_command_fails(tmp_path):
    runner = shell(tmp_path)
    runner.run("python corpora/make_dates.py corpora/dates --train 10", "ok")
    with pytest.raises(AssertionError, match="exit code 2"):
        runner.run("seqtool info runs/nothing --jsonn", "broken")


@pytest.mark.slow
def test_readme_commands_run(tmp_path):
    found = blocks(README.read_text(encoding="utf-8"))
    run = [b for b in found if b.language in RUN and b.skip is None]
    commands = sum(len(b.commands) for b in run)
    # the README's walk through all three tasks, the server and the tools: if far fewer
    # run, the convention or a marker has gone wrong, not the commands
    assert commands >= 40, f"only {commands} README commands would run"
    assert all(b.commands for b in run), "a command block without commands"
    write_stand_ins(tmp_path)
    runner = shell(tmp_path)
    try:
        for block in run:
            for command in block.commands:
                runner.run(command, f"README.md:{block.line}")
    except BaseException:
        runner.close("README.md", check=False)
        raise
    runner.close("README.md: the end")
    slowest = sorted(runner.times, reverse=True)[:5]
    print("\nslowest README commands:", *(f"{t:5.1f}s {c!r}" for t, c in slowest), sep="\n")
