"""The command line: parse options, call the library, render results.

Heavy imports (torch, sentencepiece, rich) happen inside the commands, so that
`seqtool --help` answers at once.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from seqtool import __version__
from seqtool.config import (
    ATTENTIONS,
    CELLS,
    DEVICES,
    POOLINGS,
    PRECISIONS,
    SCHEDULES,
    TOKENIZERS,
)

POSITIVE = click.IntRange(min=1)
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "loss")
TRANSLATOR_METRICS = ("bleu", "loss")
INTERRUPTED = 130


class SeqtoolGroup(click.Group):
    """Turns library errors into one `Error: ...` line and exit code 1."""

    def invoke(self, ctx: click.Context):
        from seqtool.errors import SeqtoolError, TrainingInterrupted

        try:
            return super().invoke(ctx)
        except TrainingInterrupted as stop:
            click.echo(f"Interrupted: {stop}.", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
        except SeqtoolError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=SeqtoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqtool")
def cli() -> None:
    """Train and run recurrent sequence models on your own text files.

    \b
    Example:
      seqtool train generator --train input.txt --out runs/shakes --max-time 10m
      seqtool generate runs/shakes --prompt "ROMEO:" --length 300
    """
    from seqtool.allocator import keep_freed_memory

    keep_freed_memory()


@cli.group(cls=SeqtoolGroup)
def train() -> None:
    """Train a model; each writes RUN_DIR/best.ckpt, last.ckpt and metrics.jsonl.

    \b
    Example:
      seqtool train generator --train input.txt --out runs/shakes --max-time 10m
    """


def _duration(ctx, param, value):
    if value is None:
        return None
    from seqtool.config import parse_duration
    from seqtool.errors import ConfigError

    try:
        return parse_duration(value)
    except ConfigError as err:
        raise click.BadParameter(str(err)) from None


GENERATOR_DEFAULTS = dict(
    layers=2,
    hidden_size=512,
    embedding_size=64,
    dropout=0.0,
    batch_size=64,
    lr=2e-3,
    eval_every=250,
)
CLASSIFIER_DEFAULTS = dict(
    layers=1,
    hidden_size=256,
    embedding_size=256,
    dropout=0.5,
    batch_size=32,
    lr=3e-3,
    eval_every=100,
)

# three members for 6 epochs: SST-2 82.9 in about 3.5 minutes on 2 cores, where one
# member for 10 epochs reaches 80.7 in 2 (BENCHMARKS.md, "SST-2")
CLASSIFIER_MEMBERS = 3
CLASSIFIER_EPOCHS = 6

TRANSLATOR_DEFAULTS = dict(
    layers=1,
    hidden_size=256,
    embedding_size=256,
    dropout=0.3,
    batch_size=64,
    lr=1e-3,
    eval_every=500,
    cell="gru",
    batch_help="Most sentence pairs per batch (see --batch-tokens).",
)


def training_options(defaults: dict):
    """Options every `train` command shares, with the same names everywhere; the
    model-size defaults differ per task."""
    options = [
        click.option(
            "--out",
            "out",
            required=True,
            type=click.Path(file_okay=False),
            help="Run directory for checkpoints and metrics.jsonl.",
        ),
        click.option(
            "--cell",
            type=click.Choice(CELLS),
            default=defaults.get("cell", "lstm"),
            show_default=True,
            help="Recurrent cell; rnn is the basic Elman network.",
        ),
        click.option("--layers", type=POSITIVE, default=defaults["layers"], show_default=True),
        click.option(
            "--hidden-size", type=POSITIVE, default=defaults["hidden_size"], show_default=True
        ),
        click.option(
            "--embedding-size", type=POSITIVE, default=defaults["embedding_size"], show_default=True
        ),
        click.option(
            "--dropout",
            type=click.FloatRange(0, 1, max_open=True),
            default=defaults["dropout"],
            show_default=True,
        ),
        click.option(
            "--batch-size",
            type=POSITIVE,
            default=defaults["batch_size"],
            show_default=True,
            help=defaults.get("batch_help"),
        ),
        click.option(
            "--lr",
            type=click.FloatRange(0, min_open=True),
            default=defaults["lr"],
            show_default=True,
            help="Peak learning rate (AdamW).",
        ),
        click.option("--weight-decay", type=click.FloatRange(0), default=0.01, show_default=True),
        click.option(
            "--clip",
            type=click.FloatRange(0),
            default=1.0,
            show_default=True,
            help="Clip the gradient norm to this; 0 turns clipping off.",
        ),
        click.option(
            "--schedule",
            type=click.Choice(SCHEDULES),
            default="cosine",
            show_default=True,
            help="Learning rate after warmup: cosine decay to lr/10 over the budget.",
        ),
        click.option("--warmup-steps", type=click.IntRange(min=0), default=50, show_default=True),
        click.option("--max-steps", type=POSITIVE, help="Budget in optimizer steps."),
        click.option(
            "--max-epochs",
            type=click.FloatRange(0, min_open=True),
            help="Budget in passes over the training data.",
        ),
        click.option(
            "--max-time",
            callback=_duration,
            metavar="DURATION",
            help="Budget in wall time: 90s, 10m, 2h.",
        ),
        click.option(
            "--eval-every",
            type=POSITIVE,
            default=defaults["eval_every"],
            show_default=True,
            help="Validate (and save checkpoints) every N steps.",
        ),
        click.option("--log-every", type=POSITIVE, default=25, show_default=True),
        click.option(
            "--patience", type=POSITIVE, help="Stop after N evaluations without improvement."
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default="auto",
            show_default=True,
            help="auto: bf16 where the hardware runs it natively, else fp32.",
        ),
        click.option("--threads", type=POSITIVE, help="CPU threads for torch."),
        click.option(
            "--vocab-size",
            type=POSITIVE,
            help="Sentencepiece vocabulary size (adjusted with a warning if it does "
            "not fit the corpus).",
        ),
        click.option("--resume", is_flag=True, help="Continue RUN_DIR/last.ckpt exactly."),
        click.option("--force", is_flag=True, help="Start over in a RUN_DIR that holds a run."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


# train options that may change when a run is resumed; the rest come from the checkpoint
RESUMABLE = (
    "max_steps",
    "max_epochs",
    "max_time",
    "eval_every",
    "log_every",
    "patience",
    "device",
    "precision",
    "threads",
)


def _train_config(ctx: click.Context, options: dict, resume_ckpt, default_epochs: int):
    from seqtool.config import TrainConfig
    from seqtool.ui import note, warn

    names = {f for f in TrainConfig.__dataclass_fields__}
    given = {k: v for k, v in options.items() if k in names}
    if resume_ckpt is None:
        config = TrainConfig(**given)
        if not config.has_budget:
            note(
                f"no budget given: training for {default_epochs} epochs (set --max-steps, "
                "--max-epochs or --max-time)"
            )
            config = TrainConfig(**{**given, "max_epochs": default_epochs})
        return config
    stored = dict(resume_ckpt["train_config"])
    explicit = {k for k in options if ctx.get_parameter_source(k).name == "COMMANDLINE"}
    ignored = sorted(
        k for k in explicit - set(RESUMABLE) if k not in names or given[k] != stored[k]
    )
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        warn(f"{flags} ignored: a resumed run keeps its stored settings")
    stored.update({k: given[k] for k in explicit & set(RESUMABLE)})
    return TrainConfig.from_dict(stored)


def _check_run_dir(out: str, resume: bool, force: bool) -> tuple[Path, list[Path]]:
    """The run directory, and the files of an earlier run that --force will replace
    (removed only once the new data has been read without error)."""
    from seqtool.errors import ConfigError

    run_dir = Path(out)
    held = [run_dir / n for n in ("best.ckpt", "last.ckpt", "metrics.jsonl")]
    held = [path for path in held if path.exists()]
    if resume:
        if not (run_dir / "last.ckpt").exists():
            raise ConfigError(f"{run_dir}: nothing to resume (no last.ckpt); drop --resume")
        return run_dir, []
    if held and not force:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in held)}); "
            f"add --resume to continue it or --force to start over"
        )
    return run_dir, held


def _model_options(options: dict, *task_specific: str) -> dict:
    """The model config fields given on the command line (`--layers` is `num_layers`)."""
    shared = ("cell", "embedding_size", "hidden_size", "dropout")
    return {
        "num_layers": options["layers"],
        **{name: options[name] for name in (*shared, *task_specific)},
    }


def _train(
    ctx,
    task_name,
    prepare,
    train_path,
    valid_path,
    out,
    resume,
    force,
    options,
    model_options,
    default_epochs=10,
    **task_options,
) -> None:
    """What every `train` command does: check the run directory, build the configs, let
    the task read its data, and run the training loop (for `default_epochs` when the
    command line sets no budget)."""
    from seqtool import checkpoint, distributed
    from seqtool.config import TokenizerConfig
    from seqtool.device import pick_device
    from seqtool.ui import note

    distributed.init(pick_device(options["device"]))  # under torchrun: join the others
    if not distributed.is_main():
        note = lambda message: None  # noqa: E731 (one process speaks for all)
    run_dir, replaced = _check_run_dir(out, resume, force)
    resume_ckpt = checkpoint.load(run_dir / "last.ckpt", task=task_name) if resume else None
    config = _train_config(ctx, options, resume_ckpt, default_epochs)
    tokenizer_config = TokenizerConfig(options["tokenizer"], options["vocab_size"])
    task = prepare(
        train_path,
        valid_path,
        run_dir,
        tokenizer_config,
        model_options,
        config,
        resume_ckpt,
        note,
        **task_options,
    )
    if distributed.is_main():
        for path in replaced:
            path.unlink()
    try:
        _fit(task, config, run_dir, resume_ckpt)
    finally:
        distributed.shutdown()


def _resume_command() -> str:
    from seqtool import distributed

    launcher = ["seqtool"]
    if distributed.world() > 1:
        launcher = ["torchrun", "--nproc_per_node", str(distributed.world()), "-m", "seqtool"]
    command = " ".join(shlex.quote(a) for a in [*launcher, *sys.argv[1:]])
    return command if "--resume" in sys.argv else command + " --resume"


def _fit(task, config, run_dir: Path, resume_ckpt) -> None:
    import torch

    from seqtool.errors import TrainingInterrupted
    from seqtool.training import Trainer
    from seqtool.ui import TrainingView, console

    if config.threads:
        torch.set_num_threads(config.threads)
    trainer = Trainer(task, config, run_dir, TrainingView(task.unit), resume_ckpt)
    try:
        progress = trainer.fit()
    except TrainingInterrupted:
        if trainer.main:
            console.print(f"Saved {run_dir / 'last.ckpt'}. Resume with:\n  {_resume_command()}")
        raise
    if not trainer.main:
        return
    best = "-"
    if progress.best is not None:
        best = f"{progress.best:.4f} at step {progress.best_step:,}"
    console.print(
        f"done: {progress.step:,} steps, {progress.tokens:,} {task.unit}, "
        f"{progress.elapsed:.0f}s; best valid {task.metric} {best}; saved {run_dir}/best.ckpt"
    )


@train.command("generator")
@click.option("--train", "train_path", required=True, help="Training text file (UTF-8).")
@click.option(
    "--valid",
    "valid_path",
    help="Validation text file; without it the last 10% of --train is held out.",
)
@click.option(
    "--seq-len",
    type=POSITIVE,
    default=128,
    show_default=True,
    help="Truncated-BPTT window; the hidden state is carried across batches.",
)
@click.option(
    "--tie-weights/--no-tie-weights",
    default=False,
    show_default=True,
    help="Share the embedding with the output layer.",
)
@click.option("--tokenizer", type=click.Choice(TOKENIZERS), default="char", show_default=True)
@training_options(GENERATOR_DEFAULTS)
@click.pass_context
def train_generator(ctx, train_path, valid_path, out, resume, force, **options) -> None:
    """Train a character-level (or subword) language model.

    \b
    Example:
      seqtool train generator --train input.txt --out runs/shakes --max-time 10m
    """
    from seqtool.tasks.generator import prepare

    model_options = _model_options(options, "tie_weights")
    _train(
        ctx,
        "generator",
        prepare,
        train_path,
        valid_path,
        out,
        resume,
        force,
        options,
        model_options,
    )


@train.command("classifier")
@click.option(
    "--train",
    "train_path",
    required=True,
    help="Labelled lines: TSV label<TAB>text, or fastText __label__X text.",
)
@click.option(
    "--valid", "valid_path", help="Validation file; without it a random 10% of --train is held out."
)
@click.option("--bidirectional/--no-bidirectional", default=True, show_default=True)
@click.option(
    "--pooling",
    type=click.Choice(POOLINGS),
    default="max",
    show_default=True,
    help="How the encoder's outputs become one vector; attention can be explained.",
)
@click.option(
    "--multi-label",
    is_flag=True,
    help="One sigmoid per label (fastText lines with several labels).",
)
@click.option(
    "--class-weights",
    type=click.Choice(["balanced"]),
    help="Weight the loss against skewed label counts.",
)
@click.option(
    "--early-stop-metric",
    type=click.Choice(CLASSIFIER_METRICS),
    default="accuracy",
    show_default=True,
    help="What best.ckpt and --patience follow.",
)
@click.option(
    "--max-length",
    type=POSITIVE,
    default=256,
    show_default=True,
    help="Tokens per line; longer lines are cut with a warning.",
)
@click.option(
    "--ensemble",
    "members",
    type=POSITIVE,
    default=CLASSIFIER_MEMBERS,
    show_default=True,
    help="Classifiers trained side by side, probabilities averaged; each costs as much "
    "time as one.",
)
@click.option("--tokenizer", type=click.Choice(TOKENIZERS), default="unigram", show_default=True)
@training_options(CLASSIFIER_DEFAULTS)
@click.pass_context
def train_classifier(ctx, train_path, valid_path, out, resume, force, **options) -> None:
    """Train a recurrent text classifier.

    \b
    Example:
      seqtool train classifier --train sst2/train.tsv --valid sst2/valid.tsv --out runs/sst2
    """
    from seqtool.tasks.classifier import prepare

    model_options = _model_options(
        options, "bidirectional", "pooling", "multi_label", "max_length", "members"
    )
    _train(
        ctx,
        "classifier",
        prepare,
        train_path,
        valid_path,
        out,
        resume,
        force,
        options,
        model_options,
        default_epochs=CLASSIFIER_EPOCHS,
        metric=options["early_stop_metric"],
        class_weights=options["class_weights"],
    )


@train.command("translator")
@click.option(
    "--train",
    "train_path",
    required=True,
    help="TSV file (source<TAB>target), or a path prefix with --src-lang/--tgt-lang.",
)
@click.option(
    "--valid",
    "valid_path",
    help="Validation data; without it random pairs of --train are held out.",
)
@click.option("--src-lang", help="Source suffix: --train data/train --src-lang de reads train.de.")
@click.option("--tgt-lang", help="Target suffix: --tgt-lang en reads train.en.")
@click.option("--joint-vocab", is_flag=True, help="One sentencepiece model for source and target.")
@click.option(
    "--attention",
    type=click.Choice(ATTENTIONS),
    default="bahdanau",
    show_default=True,
    help="bahdanau (additive), luong (multiplicative), none (plain encoder-decoder).",
)
@click.option("--bidirectional/--no-bidirectional", default=True, show_default=True)
@click.option(
    "--input-feeding/--no-input-feeding",
    default=True,
    show_default=True,
    help="Feed each step's attentional vector into the next step.",
)
@click.option(
    "--tie-embeddings/--no-tie-embeddings",
    default=False,
    show_default=True,
    help="Share the target embedding with the output layer.",
)
@click.option(
    "--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True
)
@click.option(
    "--batch-tokens",
    type=POSITIVE,
    default=1200,
    show_default=True,
    help="Most padded tokens per batch (the longer side); batches are length buckets.",
)
@click.option(
    "--early-stop-metric",
    type=click.Choice(TRANSLATOR_METRICS),
    default="bleu",
    show_default=True,
    help="What best.ckpt and --patience follow (BLEU of greedy output on --valid).",
)
@click.option(
    "--max-length",
    type=POSITIVE,
    default=128,
    show_default=True,
    help="Tokens per sentence; longer ones are cut with a warning.",
)
@click.option("--tokenizer", type=click.Choice(TOKENIZERS), default="unigram", show_default=True)
@training_options(TRANSLATOR_DEFAULTS)
@click.pass_context
def train_translator(ctx, train_path, valid_path, out, resume, force, **options) -> None:
    """Train an encoder-decoder translator with attention.

    \b
    Example:
      seqtool train translator --train multi30k/train --valid multi30k/valid \\
        --src-lang de --tgt-lang en --out runs/de-en --max-time 45m
    """
    from seqtool.tasks.translator import prepare

    model_options = _model_options(
        options, "bidirectional", "attention", "input_feeding", "tie_embeddings", "max_length"
    )
    _train(
        ctx,
        "translator",
        prepare,
        train_path,
        valid_path,
        out,
        resume,
        force,
        options,
        model_options,
        src_lang=options["src_lang"],
        tgt_lang=options["tgt_lang"],
        joint_vocab=options["joint_vocab"],
        metric=options["early_stop_metric"],
    )


def _input_lines(input_path: str, text: str | None):
    """The lines to process: --text, a file, or stdin (streamed, never read whole)."""
    if text is not None:
        return iter([text])
    if input_path == "-":
        return (line.rstrip("\r\n") for line in sys.stdin)
    from seqtool.data import check_file, read_lines

    return (line for _, line in read_lines(check_file(input_path)))


def _chunks(lines, size: int):
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@cli.command()
@click.argument("run")
@click.argument("input_path", default="-", metavar="[INPUT|-]")
@click.option("--text", help="Classify this one sentence instead of reading lines.")
@click.option("--top-k", type=POSITIVE, help="Print the k best labels with probabilities.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Multi-label models: print every label at least this likely.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
@click.option(
    "--explain", is_flag=True, help="Show which tokens the decision rests on (attention pooling)."
)
@click.option("--batch-size", type=POSITIVE, default=256, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
def classify(run, input_path, text, top_k, threshold, as_json, explain, batch_size, device):
    """Label each input line (one output line per input line, in order).

    \b
    Example:
      seqtool classify runs/sst2 < sentences.txt
      seqtool classify runs/sst2 --text "a gorgeous , witty film" --top-k 2
    """
    import torch

    from seqtool import checkpoint
    from seqtool.data import encode_lines
    from seqtool.device import pick_device
    from seqtool.errors import ConfigError
    from seqtool.tasks.classifier import decide, load_model, predict_logits
    from seqtool.ui import attention_bars, warn

    ckpt = checkpoint.load(run, task="classifier")
    model, tokenizer = load_model(ckpt)
    target = pick_device(device)
    model.to(target)
    config = model.config
    if explain:
        if text is None:
            raise ConfigError("--explain shows one sentence: give it with --text")
        if config.pooling != "attention":
            raise ConfigError(
                f"--explain needs a model trained with --pooling attention "
                f"(this one pools with {config.pooling})"
            )
    out = sys.stdout
    for chunk in _chunks(_input_lines(input_path, text), batch_size):
        ids = encode_lines(tokenizer, chunk, config.max_length, warn)
        probs, chosen = decide(predict_logits(model, ids, batch_size, target), config, threshold)
        for line, row, labels in zip(chunk, probs, chosen, strict=True):
            if not line.strip():
                out.write("\n")  # keep one output line per input line
                continue
            ranked = row.argsort(descending=True).tolist()[: top_k or len(row)]
            if as_json:
                record = {
                    "label": config.labels[labels[0]],
                    "labels": [config.labels[i] for i in labels],
                    "probability": round(float(row[labels[0]]), 6),
                    "top": [[config.labels[i], round(float(row[i]), 6)] for i in ranked],
                }
                out.write(json.dumps(record) + "\n")
            elif top_k:
                out.write("\t".join(f"{config.labels[i]}\t{row[i]:.4f}" for i in ranked) + "\n")
            else:
                out.write(" ".join(config.labels[i] for i in labels) + "\n")
        out.flush()
    if explain:
        tokens = torch.tensor([ids[0]])
        with torch.inference_mode():
            _, weights = model(tokens.to(target), torch.tensor([len(ids[0])]))
        pieces = [tokenizer.piece(i) for i in ids[0]]
        attention_bars(pieces, weights[0].float().tolist())


@cli.command()
@click.argument("run")
@click.argument("input_path", default="-", metavar="[INPUT|-]")
@click.option("--text", help="Translate this one sentence instead of reading lines.")
@click.option(
    "--beam-size", type=POSITIVE, default=5, show_default=True, help="1 is greedy search."
)
@click.option(
    "--n-best",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Print the N best translations per input line, each with its score after a tab.",
)
@click.option(
    "--length-penalty",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="GNMT alpha: scores are log-prob / ((5 + length) / 6) ** alpha; 0 turns it off.",
)
@click.option(
    "--max-length-ratio",
    type=click.FloatRange(0, min_open=True),
    default=2.0,
    show_default=True,
    help="At most ratio x source tokens + 5 target tokens.",
)
@click.option("--batch-size", type=POSITIVE, default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
@click.option(
    "--show-attention", is_flag=True, help="Draw the attention matrix of the --text sentence."
)
@click.option(
    "--attention-plot",
    type=click.Path(dir_okay=False),
    help="Write the --text sentence's attention as a heatmap image (needs matplotlib).",
)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
def translate(
    run,
    input_path,
    text,
    beam_size,
    n_best,
    length_penalty,
    max_length_ratio,
    batch_size,
    as_json,
    show_attention,
    attention_plot,
    device,
):
    """Translate each input line (one output line per input line, in order).

    Reads INPUT, or stdin when it is piped; typed at a terminal, it translates each
    line as it is entered.

    \b
    Example:
      seqtool translate runs/de-en < test.de > test.hyp
      seqtool translate runs/de-en --text "Ein Hund rennt." --show-attention
    """
    from seqtool import checkpoint
    from seqtool.data import encode_lines
    from seqtool.device import pick_device
    from seqtool.errors import ConfigError
    from seqtool.tasks import translator
    from seqtool.ui import attention_matrix, note, warn

    if n_best > beam_size:
        raise ConfigError(f"--n-best {n_best} needs --beam-size {n_best} or more")
    ckpt = checkpoint.load(run, task="translator")
    model, src_tokenizer, tgt_tokenizer = translator.load_model(ckpt)
    target = pick_device(device)
    model.to(target)
    config = model.config
    draw = show_attention or attention_plot
    if draw:
        if text is None:
            raise ConfigError(
                "--show-attention and --attention-plot draw one sentence: give it with --text"
            )
        if config.attention == "none":
            raise ConfigError(
                "this model was trained with --attention none: it has no attention to show"
            )
        if attention_plot:
            from seqtool.ui import check_matplotlib

            check_matplotlib()
    interactive = text is None and input_path == "-" and sys.stdin.isatty()
    if interactive:
        note("Type a sentence and press Enter; Ctrl-D ends.")
    # sorting a chunk of lines by length makes batches with little padding
    chunk_size = 1 if interactive else batch_size * 16
    out = sys.stdout
    for chunk in _chunks(_input_lines(input_path, text), chunk_size):
        ids = encode_lines(src_tokenizer, chunk, config.max_length, warn, "source lines")
        results = translator.translate(
            model,
            ids,
            tgt_tokenizer,
            target,
            batch_size,
            beam_size,
            n_best,
            length_penalty,
            max_length_ratio,
            return_attention=bool(draw),
        )
        for line, found in zip(chunk, results, strict=True):
            if not line.strip():
                found = [("", None)] * n_best  # keep n_best lines per input line
            if as_json:
                best = found[0][1]
                record = {
                    "translation": found[0][0],
                    "score": None if best is None else round(best.score, 6),
                    "tokens": [] if best is None else [tgt_tokenizer.piece(i) for i in best.tokens],
                }
                if n_best > 1:
                    record["n_best"] = [
                        {"translation": t, "score": None if h is None else round(h.score, 6)}
                        for t, h in found
                    ]
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            elif n_best > 1:
                for translation, h in found:
                    out.write(f"{translation}\t{0.0 if h is None else h.score:.4f}\n")
            else:
                out.write(found[0][0] + "\n")
        out.flush()
    if draw:
        best = results[0][0][1]
        src_pieces = [src_tokenizer.piece(i) for i in ids[0]]
        tgt_pieces = [tgt_tokenizer.piece(i) for i in best.tokens]
        if best.attention.size(0) > len(tgt_pieces):
            tgt_pieces.append("</s>")  # the step that chose to end
        weights = best.attention[:, : len(src_pieces)].tolist()
        if show_attention:
            attention_matrix(src_pieces, tgt_pieces, weights)
        if attention_plot:
            from seqtool.ui import attention_heatmap

            attention_heatmap(src_pieces, tgt_pieces, weights, attention_plot)
            note(f"wrote {attention_plot}")


@cli.command()
@click.argument("run")
@click.option("--prompt", default="", help="Text to start from (printed first).")
@click.option(
    "--length",
    type=POSITIVE,
    default=500,
    show_default=True,
    help="Tokens to generate (characters, for a char model).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0),
    default=0.8,
    show_default=True,
    help="0 is greedy; higher is more varied.",
)
@click.option("--top-k", type=POSITIVE, help="Sample from the k most likely tokens only.")
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    help="Sample from the smallest set of tokens whose probability reaches p.",
)
@click.option(
    "--num-samples",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Samples computed together as one batch.",
)
@click.option("--seed", type=int, help="Same seed, same text.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
def generate(run, prompt, length, temperature, top_k, top_p, num_samples, seed, device) -> None:
    """Sample text from a trained generator; one sample streams as it is produced.

    \b
    Example:
      seqtool generate runs/shakes --prompt "ROMEO:" --length 500 --temperature 0.8
    """
    import torch

    from seqtool import checkpoint, decoding
    from seqtool.device import pick_device
    from seqtool.tasks.generator import load_model
    from seqtool.tokenizer import StreamDecoder
    from seqtool.ui import rule

    model, tokenizer = load_model(checkpoint.load(run, task="generator"))
    target = pick_device(device)
    model.to(target)
    # without a prompt, start as after a line break
    ids = tokenizer.encode(prompt or "\n")
    steps = decoding.sample(model, ids, length, num_samples, temperature, top_k, top_p, seed)
    out = sys.stdout
    if num_samples == 1:
        decoder = StreamDecoder(tokenizer)
        out.write(prompt)
        # read the tokens back a few at a time: on a GPU each read waits for the device,
        # and one wait per character would stall the queue of sampling steps
        for group in _chunks(steps, 1 if target.type == "cpu" else 16):
            for token in torch.cat(group).tolist():
                out.write(decoder.push(token))
            out.flush()
        out.write(decoder.flush() + "\n")
        return
    rows = torch.stack(list(steps), dim=1).tolist()  # (num_samples, length)
    for i, row in enumerate(rows):
        rule(f"sample {i + 1}")
        out.write(prompt + tokenizer.decode(row) + "\n")
        out.flush()


@cli.command()
@click.argument("run")
@click.option(
    "--data",
    required=True,
    help="Text to score (generator), labelled lines (classifier), or parallel data "
    "(translator: TSV, or a path prefix with --src-lang/--tgt-lang).",
)
@click.option("--src-lang", help="Translator: source suffix of aligned files.")
@click.option("--tgt-lang", help="Translator: target suffix of aligned files.")
@click.option("--batch-size", type=POSITIVE, help="Defaults to the training batch size.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Multi-label classifiers: the probability a label needs.",
)
@click.option(
    "--beam-size", type=POSITIVE, default=5, show_default=True, help="Translator: 1 is greedy."
)
@click.option(
    "--length-penalty",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Translator: GNMT alpha.",
)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    run, data, src_lang, tgt_lang, batch_size, threshold, beam_size, length_penalty, device, as_json
) -> None:
    """Score a trained model on a data file.

    \b
    Generator: loss, perplexity, bits_per_char.
    Classifier: accuracy, macro_f1, per-class figures and the confusion matrix.
    Translator: bleu, chrf (sacrebleu, detokenized), loss, perplexity.

    \b
    Example:
      seqtool evaluate runs/shakes --data valid.txt --json
      seqtool evaluate runs/sst2 --data sst2/test.tsv
      seqtool evaluate runs/de-en --data multi30k/test2016 --src-lang de --tgt-lang en
    """
    from seqtool import checkpoint
    from seqtool.device import pick_device
    from seqtool.errors import CheckpointError

    ckpt = checkpoint.load(run)
    target = pick_device(device)
    batch_size = batch_size or ckpt["train_config"]["batch_size"]
    if ckpt["task"] == "generator":
        result = _evaluate_generator(ckpt, data, batch_size, target)
    elif ckpt["task"] == "classifier":
        result = _evaluate_classifier(ckpt, data, batch_size, threshold, target)
    elif ckpt["task"] == "translator":
        result = _evaluate_translator(
            ckpt, data, src_lang, tgt_lang, batch_size, beam_size, length_penalty, target
        )
    else:
        raise CheckpointError(f"{ckpt['path']}: evaluate does not know {ckpt['task']} models")
    if as_json:
        click.echo(json.dumps(result))
        return
    from seqtool.ui import classification_tables, key_values

    key_values(data, {k: v for k, v in result.items() if not isinstance(v, dict | list)})
    if ckpt["task"] == "classifier":
        classification_tables(result, ckpt["model_config"]["labels"])


def _evaluate_translator(
    ckpt, data, src_lang, tgt_lang, batch_size, beam_size, length_penalty, device
) -> dict:
    from seqtool import metrics
    from seqtool.data import encode_lines
    from seqtool.tasks import translator
    from seqtool.ui import warn

    model, src_tokenizer, tgt_tokenizer = translator.load_model(ckpt)
    model.to(device)
    pairs = translator.read_pairs(data, src_lang, tgt_lang, warn)
    limit = model.config.max_length
    src = encode_lines(src_tokenizer, [p.src for p in pairs], limit, warn, "source lines")
    tgt = encode_lines(tgt_tokenizer, [p.tgt for p in pairs], limit, warn, "target lines")
    loss = translator.mean_loss(model, src, tgt, batch_size, device)
    found = translator.translate(
        model, src, tgt_tokenizer, device, batch_size, beam_size, 1, length_penalty
    )
    hypotheses, references = [f[0][0] for f in found], [p.tgt for p in pairs]
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(pairs)
    return {
        **metrics.bleu_chrf(hypotheses, references),
        "exact_match": exact,
        "loss": loss,
        "perplexity": metrics.perplexity(loss),
        "sentences": len(pairs),
        "beam_size": beam_size,
    }


def _evaluate_generator(ckpt, data: str, batch_size: int, device) -> dict:
    import tempfile

    import torch

    from seqtool.data import check_file, encode_file
    from seqtool.tasks.generator import evaluate_lm, load_model

    model, tokenizer = load_model(ckpt)
    model.to(device)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        tokens = encode_file(check_file(data), tokenizer, Path(tmp) / "data.ids")
        return evaluate_lm(model, tokens, batch_size, ckpt["train_config"]["seq_len"], device)


def _evaluate_classifier(ckpt, data: str, batch_size: int, threshold: float, device) -> dict:
    from seqtool.data import encode_lines, read_labeled
    from seqtool.tasks import classifier
    from seqtool.ui import warn

    model, tokenizer = classifier.load_model(ckpt)
    model.to(device)
    config = model.config
    examples, skipped = read_labeled(data)
    if skipped:
        warn(f"{data}: skipped {skipped:,} empty lines")
    classifier.check_labels(examples, config, data)
    ids = encode_lines(tokenizer, [e.text for e in examples], config.max_length, warn)
    logits = classifier.predict_logits(model, ids, batch_size, device)
    targets = classifier.make_targets(examples, config)
    report = classifier.score(logits, targets, config, threshold)
    loss = classifier.classification_loss(logits, targets, config).item()
    return {"loss": loss, **report, "examples": len(examples)}


@cli.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(run, as_json) -> None:
    """Show what a checkpoint holds: task, configs, size, progress.

    \b
    Example:
      seqtool info runs/shakes
    """
    from seqtool import checkpoint
    from seqtool.tokenizer import Tokenizer
    from seqtool.ui import key_values

    ckpt = checkpoint.load(run)
    progress = ckpt.get("progress", {})
    summary = {
        "path": ckpt["path"],
        "task": ckpt["task"],
        "seqtool_version": ckpt.get("seqtool_version"),
        "parameters": sum(t.numel() for k, t in ckpt["model_state"].items()),
        "vocab_size": {k: Tokenizer(p).vocab_size for k, p in ckpt["tokenizers"].items()},
        "steps": progress.get("step"),
        "epochs": progress.get("epoch"),
        "tokens_seen": progress.get("tokens"),
        "train_seconds": round(progress.get("elapsed", 0.0), 1),
        "best_score": progress.get("best"),
        "best_step": progress.get("best_step"),
        "metrics": ckpt.get("metrics", {}),
        "model_config": ckpt["model_config"],
        "tokenizer_config": ckpt.get("tokenizer_config", {}),
        "train_config": ckpt.get("train_config", {}),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    flat["vocab_size"] = ", ".join(f"{k} {v:,}" for k, v in summary["vocab_size"].items())
    key_values("checkpoint", flat)
    for section in ("metrics", "model_config", "tokenizer_config", "train_config"):
        if summary[section]:
            key_values(section, summary[section])


def main() -> None:
    cli(prog_name="seqtool")
