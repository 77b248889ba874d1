"""seqtool beside its peers, measured on the same machine in the same run.

Marian (the `pymarian` package: the marian program and its decoder, in its own
environment under bench/out, never a dependency of seqtool) trains its recurrent
translator on Multi30k de->en for the same wall time as seqtool's default translator, on
the same two threads, sized like it; both then translate test2016 at beam 5 as whole
processes, in fp32 and int8, and both outputs are scored by the same sacrebleu command.
JoeyNMT 2.3 is tried on a small run of its own recurrent recipe: it is beside them only
if it installs and runs unpatched.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from harness import (
    MULTI30K,
    PYTHON,
    SEQTOOL,
    BenchError,
    Section,
    Sizes,
    read_metrics,
    run,
    side_python,
)

from seqtool.config import parse_duration

TITLE = "Peers: Marian beside seqtool (Multi30k de->en, same machine, same run)"
PYMARIAN = "pymarian==1.12.42"
JOEYNMT = "joeynmt==2.3.0"
THREADS = 2
ENVS = Path("bench/out")  # the peers' environments, shared by --quick runs (pymarian: 1 GB)
# Marian's recurrent baseline (marian-examples, training-basics): layer normalization,
# dropout 0.2 inside the RNN and 0.1 of source and target words, exponential smoothing
# of the weights, the best validation kept, length-normalized beam search. Label
# smoothing 0.1 as its later recipes. Tied target embeddings, as Nematus-style models
# have.
# Adam at 1e-3 after 100 warm-up updates, not the recipe's 1e-4, which is made for days
# on a GPU: in 5-minute trials on 2 threads (Intel Xeon, 2026-12-04) validation BLEU
# after 400 updates was 19.4 at 1e-3 against 4.0 at 3e-4 (1e-4: 5.0 after 500). It
# validates every 1,000 updates, not 500: each validation (beam 5 over valid) takes
# about 45 s of its budget.
MARIAN_RECIPE = [
    "--type", "s2s", "--enc-cell", "gru", "--dec-cell", "gru", "--tied-embeddings",
    "--layer-normalization", "--dropout-rnn", 0.2, "--dropout-src", 0.1, "--dropout-trg", 0.1,
    "--label-smoothing", 0.1, "--exponential-smoothing", "--mini-batch", 64, "--maxi-batch", 100,
    "--learn-rate", 1e-3, "--lr-warmup", 100,
    "--valid-metrics", "bleu-detok", "cross-entropy", "--valid-freq", "1000u",
    "--valid-mini-batch", 64, "--keep-best", "--early-stopping", 5, "--beam-size", 5,
    "--normalize", 1, "--quiet-translation", "--seed", 1111, "--disp-freq", 50, "-w", 2000,
]  # fmt: skip
# an int8 model scoring under this fraction of the fp32 model's BLEU translates nothing
BROKEN = 0.5
DECODE = ["-b", 5, "--normalize", 1, "--mini-batch", 64, "--maxi-batch", 10,
          "--maxi-batch-sort", "src", "--quiet"]  # fmt: skip


def score(sec: Section, label: str, child, work: Path, split: str = "test2016") -> dict:
    """The translation of `split` a child printed, written to WORK/LABEL.en, and its BLEU
    and chrF: one sacrebleu command for every system (cased, 13a, sacrebleu's defaults)."""
    hypotheses = work / f"{label}.en"
    hypotheses.write_text(child.stdout, encoding="utf-8")
    child = run([PYTHON, "-m", "sacrebleu", MULTI30K / f"{split}.en", "-i", hypotheses,
                 "-m", "bleu", "chrf", "-w", 2])  # fmt: skip
    sec.commands[f"score_{label}"] = child.command
    scores = {m["name"]: m["score"] for m in json.loads(child.stdout)}
    return {"bleu": scores["BLEU"], "chrf": scores["chrF2"]}


def seqtool(sec: Section, sizes: Sizes, work: Path) -> dict:
    """seqtool's default translator for the budget: its size, training speed, and its
    beam-5 translation of test2016 in fp32 and with --quantize int8 --shortlist."""
    run_dir = work / "seqtool"
    train = run([
        *SEQTOOL, "train", "translator", "--train", MULTI30K / "train",
        "--valid", MULTI30K / "valid", "--src-lang", "de", "--tgt-lang", "en",
        "--out", run_dir, "--force", "--max-time", sizes.peers_time, *sizes.translation_extra,
    ])  # fmt: skip
    sec.commands["seqtool_train"] = train.command
    info = json.loads(run([*SEQTOOL, "info", run_dir, "--json"]).stdout)
    logs, evals = read_metrics(run_dir, "tokens_per_s")
    found = {"info": info, "tokens_per_s": statistics.median(r["tokens_per_s"] for r in logs),
             "steps": evals[-1]["step"] if evals else info["steps"]}  # fmt: skip
    for weights, options in (("fp32", []), ("int8", ["--quantize", "int8", "--shortlist"])):
        child = run([*SEQTOOL, "translate", run_dir, MULTI30K / "test2016.de",
                     "--beam-size", 5, *options])  # fmt: skip
        label = f"seqtool_{weights}"
        sec.commands[label] = child.command
        found[weights] = {"child": child, **score(sec, label, child, work)}
    return found


def marian(sec: Section, sizes: Sizes, work: Path, size: dict) -> dict | None:
    """Marian's recurrent translator at seqtool's widths and vocabulary sizes, trained
    for the same wall time (SIGTERM: it saves and exits), then decoded at beam 5 in fp32
    and as an intgemm8 model. None when pymarian cannot be installed."""
    python = side_python(sec, ENVS, "marian-env", [PYMARIAN], "import pymarian")
    if python is None:
        return None
    program = str(Path(python).parent / "pymarian")
    model_dir = work / "marian"
    model_dir.mkdir(parents=True, exist_ok=True)
    # a fresh model (Marian resumes from one it finds) and a fresh log (it appends)
    for old in [*model_dir.glob("model*"), model_dir / "train.log"]:
        old.unlink(missing_ok=True)
    vocabs = [model_dir / "vocab.de.spm", model_dir / "vocab.en.spm"]
    train = run([
        "timeout", "-s", "TERM", round(parse_duration(sizes.peers_time)), program, *MARIAN_RECIPE,
        "--model", model_dir / "model.npz", "--train-sets", MULTI30K / "train.de",
        MULTI30K / "train.en", "--valid-sets", MULTI30K / "valid.de", MULTI30K / "valid.en",
        "--vocabs", *vocabs, "--dim-vocabs", size["src"], size["tgt"],
        "--dim-emb", size["embedding"], "--dim-rnn", size["hidden"],
        "--cpu-threads", THREADS, "--log", model_dir / "train.log", "--quiet",
    ], codes=(0, 124))  # fmt: skip
    sec.commands["marian_train"] = train.command
    log = (model_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,.]+) words/s", log)]
    updates = re.findall(r"Up\. (\d+)", log)
    model, chosen = chosen_weights(sec, program, vocabs, model_dir)
    count = (f"import numpy; z = numpy.load('{model}'); print(sum(v.size for k, v in "
             "z.items() if not k.startswith('special:')))")  # fmt: skip
    found = {"tokens_per_s": statistics.median(rates) if rates else None,
             "parameters": int(run([PYTHON, "-c", count]).stdout),
             "updates": int(updates[-1]) if updates else 0, "chosen": chosen}  # fmt: skip
    int8 = model_dir / "model.int8.bin"
    sec.commands["marian_int8"] = run(
        [program, "convert", "-f", model, "-t", int8, "--gemm-type", "intgemm8"]
    ).command
    for weights, weights_file in (("fp32", model), ("int8", int8)):
        label = f"marian_{weights}"
        child = decode(sec, label, [program, "decode", "-m", weights_file, "-v", *vocabs])
        if child is None:
            continue
        sec.commands[label] = child.command
        found[weights] = {"child": child, **score(sec, label, child, work)}
    if "int8" in found and found["int8"]["bleu"] < BROKEN * found["fp32"]["bleu"]:
        sec.notes.append(
            f"marian_int8 is not beside seqtool: its translation scores "
            f"{found['int8']['bleu']:.2f} BLEU against fp32's {found['fp32']['bleu']:.2f}, "
            "not a working int8 model"
        )
        del found["int8"]
    return found


def chosen_weights(sec: Section, program: str, vocabs: list[Path], model_dir: Path):
    """The Marian weights to decode, and why. seqtool validates at the end of its budget
    and keeps the best of its evaluations; Marian validates every 1,000 updates and not
    when the signal stops it, so its final weights (model.npz, smoothed) are scored on
    valid at beam 5 beside its best validated ones, and the better is taken (on
    2026-12-04 on an AMD EPYC the best validated were 550 updates old, 40.02 valid BLEU
    against the final weights' 41.15)."""
    final, best = model_dir / "model.npz", model_dir / "model.npz.best-bleu-detok.npz"
    if not best.exists():
        return final, "its final weights (never validated)"
    found = {}
    for label, weights in (("best", best), ("final", final)):
        name = f"marian_valid_{label}"
        child = decode(sec, name, [program, "decode", "-m", weights, "-v", *vocabs], "valid")
        sec.commands[name] = child.command
        found[label] = score(sec, name, child, model_dir.parent, "valid")["bleu"]
    label = "final" if found["final"] > found["best"] else "best"
    return (final if label == "final" else best), (
        f"its {label} weights (valid BLEU at beam 5: final {found['final']:.2f}, best "
        f"validated {found['best']:.2f})"
    )


def decode(sec: Section, label: str, argv: list, split: str = "test2016"):
    """Marian's beam-5 translation of `split` on THREADS threads as a whole process;
    None, with a note, when the int8 model's decoder fails (the fp32 ones must run)."""
    try:
        return run([*argv, "--cpu-threads", THREADS, *DECODE], stdin=MULTI30K / f"{split}.de")
    except BenchError as err:
        if label != "marian_int8":
            raise
        sec.notes.append(f"{label} is not beside seqtool: its decoder failed: {err}")
        return None


JOEYNMT_CONFIG = """name: "check"
data:
    train: "{data}/train"
    dev: "{data}/dev"
    test: "{data}/test"
    dataset_type: "plain"
    src: {{lang: "de", level: "word", voc_limit: 2000, max_length: 50}}
    trg: {{lang: "en", level: "word", voc_limit: 2000, max_length: 50}}
testing: {{beam_size: 5, beam_alpha: 1.0, eval_metrics: ["bleu"]}}
training:
    optimizer: "adam"
    learning_rate: 0.0002
    scheduling: "plateau"
    patience: 8
    decrease_factor: 0.7
    batch_size: 32
    updates: 20
    validation_freq: 10
    logging_freq: 5
    model_dir: "{data}/model"
    overwrite: True
    use_cuda: False
model:
    encoder: {{type: "recurrent", rnn_type: "gru", hidden_size: 32, bidirectional: True,
              embeddings: {{embedding_dim: 32}}}}
    decoder: {{type: "recurrent", rnn_type: "gru", hidden_size: 32, attention: "bahdanau",
              embeddings: {{embedding_dim: 32}}}}
"""


def joeynmt(sec: Section, work: Path) -> None:
    """A note on whether JoeyNMT 2.3 installs (beside this machine's torch) and runs its
    recurrent recipe (the plateau schedule of its iwslt_deen_bahdanau config) for 20
    updates on 500 pairs, unpatched."""
    import torch

    # importlib_metadata: imported by joeynmt.helpers, not among its requirements
    packages = [f"torch=={torch.__version__.split('+')[0]}", JOEYNMT, "importlib_metadata"]
    python = side_python(sec, ENVS, "joeynmt-env", packages, "import joeynmt")
    if python is None:
        return
    data = work / "joeynmt"
    data.mkdir(parents=True, exist_ok=True)
    for split, source, lines in (("train", "train", 500), ("dev", "valid", 50),
                                 ("test", "test2016", 50)):  # fmt: skip
        for lang in ("de", "en"):
            text = (MULTI30K / f"{source}.{lang}").read_text(encoding="utf-8").splitlines()
            (data / f"{split}.{lang}").write_text("\n".join(text[:lines]) + "\n", encoding="utf-8")
    config = data / "config.yaml"
    config.write_text(JOEYNMT_CONFIG.format(data=data.absolute()), encoding="utf-8")
    try:
        child = run([python, "-m", "joeynmt", "train", config])
        sec.commands["joeynmt"] = child.command
        sec.notes.append(f"{JOEYNMT} runs unpatched here; it is not yet trained beside them")
    except BenchError as err:
        sec.notes.append(f"{JOEYNMT} is not beside them: its recurrent recipe does not run "
                         f"unpatched with torch {torch.__version__}: {err}")  # fmt: skip


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    work = out / "peers"
    work.mkdir(parents=True, exist_ok=True)
    ours = seqtool(sec, sizes, work)
    config = ours["info"]["model_config"]
    # embeddings as wide as the RNN: seqtool's long budget ties its target embedding and
    # widens it to keep its parameters (LONG_EMBEDDING), which Marian's tied model at
    # seqtool's hidden width matches within 10%; at the wider embedding it would not
    size = {"src": config["src_vocab_size"], "tgt": config["tgt_vocab_size"],
            "embedding": config["hidden_size"], "hidden": config["hidden_size"]}  # fmt: skip
    theirs = marian(sec, sizes, work, size)
    joeynmt(sec, work)
    budget = sizes.peers_time
    if theirs is None:
        sec.add(f"seqtool test2016 BLEU after {budget}, beam 5", "BLEU", ours["fp32"]["bleu"],
                commands=["seqtool_train", "seqtool_fp32"])  # fmt: skip
        return
    both = ["seqtool_train", "marian_train"]
    parameters = float(ours["info"]["parameters"])
    sec.add("parameters (ref: Marian s2s at seqtool's hidden width and vocabularies)",
            "parameters", parameters, theirs["parameters"], "deviation <= 0.1", both)  # fmt: skip
    for metric, unit in (("bleu", "BLEU"), ("chrf", "chrF")):
        sec.add(f"test2016 {unit} after {budget} of training, beam 5 (ref: Marian, the same "
                "time and threads)", unit, ours["fp32"][metric], theirs["fp32"][metric],
                "ratio >= 1.0", [*both, "seqtool_fp32", "marian_fp32"])  # fmt: skip
    if theirs["tokens_per_s"]:
        sec.add("training speed, median over the run (ref: Marian's words/s, its target "
                "labels)", "target tokens/s", ours["tokens_per_s"], theirs["tokens_per_s"],
                "ratio >= 1.0", both)  # fmt: skip
    sentences = len((MULTI30K / "test2016.de").read_text(encoding="utf-8").splitlines())
    options = {"fp32": "fp32 (ref: Marian fp32)",
               "int8": "--quantize int8 --shortlist (ref: Marian intgemm8)"}  # fmt: skip
    for weights, what in options.items():
        # seqtool's row stands alone when Marian's int8 model does not work (its note)
        mine, peer = ours[weights], theirs.get(weights)
        labels = [f"seqtool_{weights}"] + ([f"marian_{weights}"] if peer else [])
        speed, rss, bleu = (None, None, None) if peer is None else (
            sentences / peer["child"].wall, peer["child"].max_rss_mb, peer["bleu"])  # fmt: skip
        sec.add(f"translate test2016 at beam 5, whole process, {what}", "sentences/s",
                sentences / mine["child"].wall, speed, "ratio >= 1.0" if peer else "",
                labels)  # fmt: skip
        sec.add(f"translate test2016 at beam 5, peak RSS, {what}", "MiB",
                mine["child"].max_rss_mb, rss, "", labels)  # fmt: skip
        sec.add(f"test2016 BLEU of that translation, {what}", "BLEU", mine["bleu"], bleu, "",
                labels)  # fmt: skip
    sec.notes.append(
        f"seqtool: {ours['steps']:,} steps, its best checkpoint at step "
        f"{ours['info']['steps']:,} (epoch {ours['info']['epochs']}); Marian: "
        f"{theirs['updates']:,} updates (the last its log shows), decoded with "
        f"{theirs['chosen']}; both on "
        f"{THREADS} threads. Model sizes: {size}"
    )
