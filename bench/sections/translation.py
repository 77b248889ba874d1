"""Multi30k de->en BLEU and chrF after a fixed budget, with and without attention. Peers
trained beside it on the same machine are in the peers section."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import MULTI30K, SEQTOOL, Section, Sizes, last_json, read_metrics, run

TITLE = "Translation quality (Multi30k de->en)"


def translator_run(out: Path, attention: str) -> Path:
    """The run directory of the translator trained with `attention` (translate reuses it)."""
    return out / f"m30k_{attention}"


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    """Train on Multi30k de->en for the budget with seqtool's defaults, with and without
    attention; score test2016 at beam 5 (cased, detokenized sacrebleu)."""
    scores = {}
    for attention in ("bahdanau", "none"):
        run_dir = translator_run(out, attention)
        train = run([
            *SEQTOOL, "train", "translator", "--train", MULTI30K / "train",
            "--valid", MULTI30K / "valid", "--src-lang", "de", "--tgt-lang", "en",
            "--out", run_dir, "--force", "--max-time", sizes.translation_time,
            *(("--attention", "none") if attention == "none" else ()),
            *sizes.translation_extra,
        ])  # fmt: skip
        sec.commands[f"train_{attention}"] = train.command
        test = run([
            *SEQTOOL, "evaluate", run_dir, "--data", MULTI30K / "test2016",
            "--src-lang", "de", "--tgt-lang", "en", "--beam-size", 5, "--json",
        ])  # fmt: skip
        sec.commands[f"test_{attention}"] = test.command
        logs, evals = read_metrics(run_dir, "tokens_per_s")
        scores[attention] = last_json(test.stdout)
        scores[attention]["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in logs)
        scores[attention]["steps"] = logs[-1]["step"]
        scores[attention]["epochs"] = logs[-1]["epoch"]
    best, plain = scores["bahdanau"], scores["none"]
    labels = ["train_bahdanau", "test_bahdanau"]
    budget = sizes.translation_time
    sec.add(f"test2016 BLEU after {budget}, beam 5", "BLEU", best["bleu"], commands=labels)
    sec.add(f"test2016 chrF after {budget}, beam 5", "chrF", best["chrf"], commands=labels)
    sec.add(
        "test2016 BLEU, --attention none, same budget (ref: with attention, this run)",
        "BLEU",
        plain["bleu"],
        best["bleu"],
        commands=["train_none", "test_none"],
    )
    sec.add("test2016 chrF, --attention none, same budget", "chrF", plain["chrf"], best["chrf"])
    sec.add(
        "training speed, median over the run",
        "target tokens/s",
        best["tokens_per_s"],
        commands=["train_bahdanau"],
    )
    sec.notes.append(
        f"with attention: {best['steps']:,} steps, {best['epochs']:.1f} epochs, "
        f"test loss {best['loss']:.3f}; without: {plain['steps']:,} steps, "
        f"{plain['epochs']:.1f} epochs, test loss {plain['loss']:.3f}; "
        f"{best['bleu_signature']}; chrF {best['chrf_signature']}"
    )
