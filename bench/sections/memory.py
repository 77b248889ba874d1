"""Peak RSS and time to the first training step on a large corpus, tokenization speed;
and `probe_tokenize`, the in-process measurement it runs as a child."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from harness import SELF, SEQTOOL, TRAIN, VALID, Section, Sizes, last_json, run

TITLE = "Memory on a large corpus"


def make_corpus(path: Path, size: int) -> None:
    """Copies of tinyshakespeare train.txt, each after its own marker line, up to `size`
    bytes; kept between runs (bench/out/ is not in git)."""
    if path.exists() and path.stat().st_size >= size:
        return
    text = TRAIN.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        copy = 0
        while f.tell() < size:
            copy += 1
            f.write(f"=== copy {copy} ===\n".encode())
            f.write(text)
    os.replace(tmp, path)


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    """A corpus far larger than the model needs: peak RSS stays flat because the token
    ids live in a memory-mapped cache next to the run; the first start builds it, later
    starts map it."""
    corpus = out / f"big{sizes.memory_mb}mb.txt"
    make_corpus(corpus, sizes.memory_mb * 1_000_000)
    mb = corpus.stat().st_size / 1e6
    run_dir = out / "mem"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [
        *SEQTOOL, "train", "generator", "--train", corpus, "--valid", VALID, "--out", run_dir,
        "--force", "--hidden-size", 64, "--embedding-size", 16, "--layers", 1, "--max-steps", 1,
    ]  # fmt: skip
    cold = run(argv)
    sec.commands["cold"] = cold.command
    warm = run(argv)  # --force keeps RUN/data: the cache is reused
    sec.commands["warm"] = warm.command
    shutil.rmtree(run_dir / "data", ignore_errors=True)  # its token cache, 2 bytes a char
    cache = out / "tokenize.ids"
    probe = run([*SELF, "probe-tokenize", corpus, cache])
    sec.commands["tokenize"] = probe.command
    for path in (cache, cache.with_suffix(".json")):
        path.unlink(missing_ok=True)
    speed = last_json(probe.stdout)
    sec.add(
        f"peak RSS, training on a {mb:,.0f} MB corpus (tokenize, cache, first step)",
        "MiB",
        cold.max_rss_mb,
        target="value < 2048",
        commands=["cold"],
    )
    sec.add(
        "time to the first training step, first start (builds the cache), whole process",
        "s",
        cold.wall,
        commands=["cold"],
    )
    sec.add(
        "time to the first training step, later start (maps the cache), whole process",
        "s",
        warm.wall,
        commands=["warm"],
    )
    sec.add(
        "tokenization speed (seqtool.data.encode_file, char)",
        "MB/s",
        speed["mb_per_s"],
        commands=["tokenize"],
    )
    sec.add(
        "peak RSS, tokenizer training + encode_file",
        "MiB",
        probe.max_rss_mb,
        target="value < 2048",
        commands=["tokenize"],
    )
    sec.notes.append(
        f"corpus: {corpus} ({mb:,.0f} MB), copies of tinyshakespeare train.txt, each after a "
        f"marker line; tokenizer training took {speed['train_s']:.1f} s, encode_file "
        f"{speed['encode_s']:.1f} s for {speed['tokens']:,} tokens. Both training runs stop "
        f"after one step and score the small tinyshakespeare valid.txt once. Peak RSS from "
        f"os.wait4."
    )


def probe_tokenize(path: str, cache: str) -> None:
    """Train a char tokenizer on `path`, then time seqtool.data.encode_file alone."""
    from seqtool.data import TextLines, encode_file
    from seqtool.tokenizer import Tokenizer

    source, cache_path = Path(path), Path(cache)
    for stale in (cache_path, cache_path.with_suffix(".json")):
        stale.unlink(missing_ok=True)  # never time a cache hit
    start = time.perf_counter()
    tokenizer, _ = Tokenizer.train(TextLines(source), "char")
    trained_at = time.perf_counter()
    tokens = encode_file(source, tokenizer, cache_path)
    done = time.perf_counter()
    result = {
        "train_s": trained_at - start,
        "encode_s": done - trained_at,
        "tokens": len(tokens.ids),
        "mb_per_s": source.stat().st_size / 1e6 / (done - trained_at),
    }
    print(json.dumps(result))
