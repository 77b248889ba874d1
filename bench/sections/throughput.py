"""Training chars/s, fp32 and bf16, against ref_charlstm.py on the same model and batch."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import (
    PYTHON,
    REF_TRAIN,
    SEQTOOL,
    TRAIN,
    VALID,
    Section,
    Sizes,
    key_values,
    read_metrics,
    run,
)

TITLE = "Training throughput (tinyshakespeare)"


def model_options(hidden: int) -> list[str]:
    """The throughput model and schedule, as seqtool options (matching ref_charlstm.py)."""
    return [
        "--hidden-size", hidden, "--layers", 2, "--embedding-size", 64, "--batch-size", 64,
        "--seq-len", 128, "--dropout", 0, "--schedule", "constant", "--warmup-steps", 0,
        "--lr", "2e-3", "--clip", "1.0",
    ]  # fmt: skip


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    ref = run([
        PYTHON, REF_TRAIN, "--train", TRAIN, "--valid", VALID, "--hidden", sizes.hidden,
        "--layers", 2, "--emb", 64, "--batch", 64, "--seq", 128, "--lr", "2e-3",
        "--dropout", 0, "--steps", sizes.ref_steps,
    ])  # fmt: skip
    sec.commands["ref"] = ref.command
    ref_cps = key_values(ref.stdout)["chars_per_s"]
    results = {}
    for precision in ("fp32", "bf16"):
        run_dir = out / f"tp_{precision}"
        child = run([
            *SEQTOOL, "train", "generator", "--train", TRAIN, "--valid", VALID,
            "--out", run_dir, "--force", "--precision", precision,
            "--max-steps", sizes.steps, "--eval-every", sizes.steps,
            "--log-every", sizes.log_every, *model_options(sizes.hidden),
        ])  # fmt: skip
        sec.commands[precision] = child.command
        logs, evals = read_metrics(run_dir)
        steady = logs[2:] or logs  # the first two windows are warm-up
        cps = statistics.mean(r["chars_per_s"] for r in steady)
        results[precision] = (cps, evals[-1]["loss"])
        rates = sorted(r["chars_per_s"] for r in steady)
        sec.notes.append(
            f"{precision}: mean of {len(steady)} log windows of {sizes.log_every} steps "
            f"(first {len(logs) - len(steady)} dropped as warm-up; min {rates[0]:,.0f}, median "
            f"{statistics.median(rates):,.0f}, max {rates[-1]:,.0f} chars/s); process wall "
            f"{child.wall:.0f} s, peak RSS {child.max_rss_mb:.0f} MiB"
        )
    (fp32, fp32_loss), (bf16, bf16_loss) = results["fp32"], results["bf16"]
    arch = f"LSTM 2x{sizes.hidden}, batch 64x128"
    sec.add(
        f"training chars/s, fp32 ({arch})",
        "chars/s",
        fp32,
        ref_cps,
        "ratio >= 1.0",
        ["fp32", "ref"],
    )
    sec.add(
        f"training chars/s, bf16 ({arch})",
        "chars/s",
        bf16,
        ref_cps,
        "ratio >= 1.6",
        ["bf16", "ref"],
    )
    sec.add(
        f"valid loss after {sizes.steps} steps: bf16 (seqtool) vs fp32 (reference)",
        "nats/char",
        bf16_loss,
        fp32_loss,
        "deviation <= 0.02",
        ["bf16", "fp32"],
    )
    sec.notes.append(
        f"ref: {key_values(ref.stdout).get('steps', 0):.0f} steps, its chars/s includes its "
        f"first (warm-up) steps; its val_loss is after a different number of steps, so it is "
        f"not compared. Threads: torch's default in every process."
    )
