"""`seqtool translate` speed (greedy, beam 1/5/10) against bench/ref_beam.py, and memory
while streaming many lines from stdin. Peers translating the same file on the same
machine are in the peers section."""

from __future__ import annotations

from pathlib import Path

from harness import MULTI30K, PYTHON, SEQTOOL, Section, Sizes, key_values, run

from sections.translation import translator_run

TITLE = "Translation speed and memory"


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    """`seqtool translate` on test2016, whole process, beside bench/ref_beam.py (the same
    model, one sentence and one hypothesis at a time)."""
    import sacrebleu

    model = translator_run(out, "bahdanau")
    if not (model / "best.ckpt").exists():  # the translation section was not run: any model
        model = out / "m30k_speed"
        train = run([
            *SEQTOOL, "train", "translator", "--train", MULTI30K / "train",
            "--src-lang", "de", "--tgt-lang", "en", "--out", model, "--force",
            "--max-time", "2m", *sizes.translation_extra,
        ])  # fmt: skip
        sec.commands["train"] = train.command
    source = MULTI30K / "test2016.de"
    references = (MULTI30K / "test2016.en").read_text(encoding="utf-8").splitlines()
    count = len(references)

    def bleu(text: str) -> float:
        return sacrebleu.corpus_bleu(text.splitlines(), [references]).score

    walls, scores = {}, {}
    for beam in (1, 5, 10):
        child = run([*SEQTOOL, "translate", model, source, "--beam-size", beam])
        sec.commands[f"beam{beam}"] = child.command
        assert len(child.stdout.splitlines()) == count, "one output line per input line"
        walls[beam], scores[beam] = child.wall, bleu(child.stdout)
    ref = run([PYTHON, "bench/ref_beam.py", model, source, "--beam-size", 5])
    sec.commands["ref"] = ref.command
    ref_rate = key_values(ref.stderr.splitlines()[-1])["sentences_per_s"]
    for beam in (1, 5, 10):
        name = "greedy (beam 1)" if beam == 1 else f"beam {beam}"
        sec.add(
            f"`seqtool translate` test2016, {name}, whole process",
            "sentences/s",
            count / walls[beam],
            commands=[f"beam{beam}"],
        )
    sec.add(
        "beam 5, whole process (ref: bench/ref_beam.py, per sentence, without load time)",
        "sentences/s",
        count / walls[5],
        ref_rate,
        target="ratio >= 5",
        commands=["beam5", "ref"],
    )
    sec.notes.append(
        "test2016 BLEU of the same model: "
        + ", ".join(f"beam {b} {scores[b]:.2f}" for b in (1, 5, 10))
        + f"; bench/ref_beam.py at beam 5 {bleu(ref.stdout):.2f}"
    )

    # memory: 100,000 lines streamed from stdin against the 1,000 test lines (greedy)
    many = out / "lines100k.de"
    lines = source.read_text(encoding="utf-8").splitlines()
    many.write_text("\n".join((lines * -(-sizes.stream_lines // count))[: sizes.stream_lines]))
    stream = run([*SEQTOOL, "translate", model, "--beam-size", 1], stdin=many)
    sec.commands["stream"] = stream.command
    assert len(stream.stdout.splitlines()) == sizes.stream_lines, "one output line per input"
    sec.add(
        f"peak RSS translating {sizes.stream_lines:,} lines from stdin, greedy "
        f"(ref: {count:,} lines)",
        "MiB",
        stream.max_rss_mb,
        run([*SEQTOOL, "translate", model, source, "--beam-size", 1]).max_rss_mb,
        target="ratio <= 1.1",
        commands=["stream", "beam1"],
    )
    sec.add(
        f"`seqtool translate` {sizes.stream_lines:,} lines from stdin, greedy, whole process",
        "sentences/s",
        sizes.stream_lines / stream.wall,
        commands=["stream"],
    )
