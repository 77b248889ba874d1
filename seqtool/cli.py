"""The command line: parse options, call the library, render results.

Each command is one call into the library (seqtool.load, seqtool.training.train,
seqtool.inference.info); results go to stdout, everything a person reads goes to stderr
through seqtool.ui. Library imports happen inside the commands, so that `seqtool --help`
and every subcommand's `--help` answer without importing torch.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import shlex
import sys

import click

from seqtool.config import (
    ATTENTIONS,
    CELLS,
    DEFAULT_MEMBERS,
    DEFAULT_TOKENIZER,
    MAX_LENGTH_RATIO,
    POOLINGS,
    PRECISIONS,
    QUANTIZATIONS,
    SCHEDULES,
    TOKENIZERS,
    TRAIN_DEFAULTS,
    ClassifierConfig,
    ClassifyConfig,
    GeneratorConfig,
    SamplingConfig,
    SearchConfig,
    TrainConfig,
    TranslatorConfig,
    defaults,
)
from seqtool.version import __version__

# bounded so that a size reaches torch as a number it can allocate or refuse (2**62 makes
# a tensor size overflow)
POSITIVE = click.IntRange(1, 2**31 - 1)
# what torch.manual_seed takes, less one bit: sampling seeds rows seed + i
SEED = click.IntRange(0, 2**63 - 1)
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "loss")
TRANSLATOR_METRICS = ("bleu", "loss")
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`
# generate --num-samples prints this many tokens or fewer from one batch; above it each
# sample is sampled and printed alone (same text, as row i is seeded seed + i), so that
# text appears at once and memory does not grow with the output
BATCH_TOKENS = 100_000
SAMPLING, SEARCH, CLASSIFY = (
    defaults(SamplingConfig),
    defaults(SearchConfig),
    defaults(ClassifyConfig),
)


class Device(click.ParamType):
    """--device: auto, cpu, cuda, cuda:N (one GPU of several) or mps."""

    name = "device"

    def get_metavar(self, param, ctx=None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value, param, ctx):
        from seqtool.config import is_device

        if not is_device(value):
            self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps", param, ctx)
        return value


class Finite(click.FloatRange):
    """A float in a range, refusing nan and inf: nan passes every comparison of
    FloatRange, and neither is a setting any option means."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class SeqtoolGroup(click.Group):
    """Turns library errors into one `Error: ...` line and exit code 1, and Ctrl-C in
    any command into exit code 130, quietly, keeping what was printed."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the whole command line, once
            _check_utf8(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        from seqtool.errors import SeqtoolError, TrainingInterrupted

        try:
            return super().invoke(ctx)
        except TrainingInterrupted as stop:
            click.echo(f"Interrupted: {stop}.", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                sys.stdout.flush()
            raise click.exceptions.Exit(INTERRUPTED) from None
        except SeqtoolError as err:
            raise click.ClickException(str(err)) from None


def _check_utf8(args: list[str]) -> None:
    """Arguments are text: Python hands over bytes that are not UTF-8 as lone surrogates,
    which no tokenizer, terminal or JSON encoder takes. Refuse them here, once."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as err:
            try:  # the bytes as given, shown as \xe9
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:  # a surrogate that stands for no byte
                shown = arg.encode("utf-8", "backslashreplace").decode()
            raise click.ClickException(
                f"the argument '{shown}' is not valid UTF-8 (at character {err.start + 1}); "
                "give arguments (and file names) in UTF-8"
            ) from None


def _show_warnings() -> None:
    """The library reports SeqtoolWarnings; print each as a `Warning: ...` line."""
    import warnings

    from seqtool.errors import SeqtoolWarning

    original = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, SeqtoolWarning):
            from seqtool.ui import warn

            warn(str(message))
        else:
            original(message, category, *args, **kwargs)

    warnings.showwarning = show
    warnings.simplefilter("always", SeqtoolWarning)


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
    _show_warnings()


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


def _apply(options: list):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def training_options(task: str, model_config):
    """Options every `train` command shares, with the same names everywhere; their
    defaults come from the task's model config and TRAIN_DEFAULTS."""
    model = defaults(model_config)
    run = {**defaults(TrainConfig), **TRAIN_DEFAULTS[task]}
    batch_help = (
        "Most sentence pairs per batch (see --batch-tokens)." if task == "translator" else None
    )
    return _apply(
        [
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
                default=model["cell"],
                show_default=True,
                help="Recurrent cell; rnn is the basic Elman network.",
            ),
            click.option("--layers", type=POSITIVE, default=model["num_layers"], show_default=True),
            click.option(
                "--hidden-size", type=POSITIVE, default=model["hidden_size"], show_default=True
            ),
            click.option(
                "--embedding-size",
                type=POSITIVE,
                default=model["embedding_size"],
                show_default=True,
            ),
            click.option(
                "--dropout",
                type=Finite(0, 1, max_open=True),
                default=model["dropout"],
                show_default=True,
            ),
            click.option(
                "--batch-size",
                type=POSITIVE,
                default=run["batch_size"],
                show_default=True,
                help=batch_help,
            ),
            click.option(
                "--lr",
                type=Finite(0, min_open=True),
                default=run["lr"],
                show_default=True,
                help="Peak learning rate (AdamW).",
            ),
            click.option(
                "--weight-decay",
                type=Finite(0),
                default=run["weight_decay"],
                show_default=True,
            ),
            click.option(
                "--clip",
                type=Finite(0),
                default=run["clip"],
                show_default=True,
                help="Clip the gradient norm to this; 0 turns clipping off.",
            ),
            click.option(
                "--schedule",
                type=click.Choice(SCHEDULES),
                default=run["schedule"],
                show_default=True,
                help="Learning rate after warmup: cosine decay to lr/10 over the budget.",
            ),
            click.option(
                "--warmup-steps",
                type=click.IntRange(min=0),
                default=run["warmup_steps"],
                show_default=True,
            ),
            click.option(
                "--average-last",
                type=click.IntRange(min=0),
                default=run["average_last"],
                show_default=True,
                metavar="N",
                help="Keep the weights of the last N evaluations in RUN_DIR/recent/ and write "
                "their mean to RUN_DIR/averaged.ckpt at the end; 0 turns it off.",
            ),
            click.option("--max-steps", type=POSITIVE, help="Budget in optimizer steps."),
            click.option(
                "--max-epochs",
                type=Finite(0, min_open=True),
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
                default=run["eval_every"],
                show_default=True,
                help="Validate (and save checkpoints) every N steps.",
            ),
            click.option("--log-every", type=POSITIVE, default=run["log_every"], show_default=True),
            click.option(
                "--patience", type=POSITIVE, help="Stop after N evaluations without improvement."
            ),
            click.option("--seed", type=SEED, default=run["seed"], show_default=True),
            click.option("--device", type=Device(), default=run["device"], show_default=True),
            click.option(
                "--precision",
                type=click.Choice(PRECISIONS),
                default=run["precision"],
                show_default=True,
                help="auto: bf16 where the hardware runs it natively, else fp32.",
            ),
            click.option("--threads", type=POSITIVE, help="CPU threads for torch."),
            click.option(
                "--tokenizer",
                type=click.Choice(TOKENIZERS),
                default=DEFAULT_TOKENIZER[task],
                show_default=True,
            ),
            click.option(
                "--vocab-size",
                type=POSITIVE,
                help="Sentencepiece vocabulary size (adjusted with a warning if it does "
                "not fit the corpus).",
            ),
            click.option("--resume", is_flag=True, help="Continue RUN_DIR/last.ckpt exactly."),
            click.option("--force", is_flag=True, help="Start over in a RUN_DIR that holds a run."),
            click.option(
                "--tensorboard",
                is_flag=True,
                help="Also write TensorBoard event files into the run directory.",
            ),
            click.option(
                "-q",
                "--quiet",
                is_flag=True,
                help="Print warnings and errors only (metrics.jsonl still gets every line).",
            ),
        ]
    )


def data_options(what: str):
    """--src-lang / --tgt-lang: parallel data as aligned files `PREFIX.LANG`."""
    return _apply(
        [
            click.option("--src-lang", help=f"{what}source suffix: --src-lang de reads PREFIX.de."),
            click.option("--tgt-lang", help=f"{what}target suffix: --tgt-lang en reads PREFIX.en."),
        ]
    )


def search_options(what: str = ""):
    """Beam search settings shared by translate and evaluate."""
    return _apply(
        [
            click.option(
                "--beam-size",
                type=POSITIVE,
                default=SEARCH["beam_size"],
                show_default=True,
                help=f"{what}1 is greedy search.",
            ),
            click.option(
                "--length-penalty",
                type=Finite(0),
                default=SEARCH["length_penalty"],
                show_default=True,
                help=f"{what}GNMT alpha: scores are log-prob / ((5 + length) / 6) ** alpha; "
                "0 turns it off.",
            ),
            click.option(
                "--shortlist",
                is_flag=True,
                help=f"{what}search each batch over the target pieces seen with its source "
                "pieces in training only: faster, nearly the same translations (see README).",
            ),
        ]
    )


def inference_options(f):
    """--device and --threads for every command that runs a trained model."""
    return _apply(
        [
            click.option(
                "--device",
                type=Device(),
                default="auto",
                show_default=True,
                help="auto: a GPU when there is one, else the CPU.",
            ),
            click.option("--threads", type=POSITIVE, help="CPU threads for torch."),
        ]
    )(f)


def quantize_option(f):
    """--quantize for the commands that predict (inspect reads the fp32 weights)."""
    return click.option(
        "--quantize",
        type=click.Choice(QUANTIZATIONS),
        default="none",
        show_default=True,
        help="int8: linear and recurrent layers in dynamic int8, on the CPU only; "
        "faster for hidden sizes of 256 and up, slightly less exact (see README).",
    )(f)


def output_options(help_text: str):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _model_options(options: dict, *task_specific: str) -> dict:
    """The model config fields given on the command line (`--layers` is `num_layers`)."""
    shared = ("cell", "embedding_size", "hidden_size", "dropout")
    return {
        "num_layers": options["layers"],
        **{name: options[name] for name in (*shared, *task_specific)},
    }


def _train(ctx: click.Context, task: str, model_options: dict, **task_options) -> None:
    """What every `train` command does: one call of seqtool.training.train, rendered."""
    from seqtool.config import TokenizerConfig
    from seqtool.errors import TrainingInterrupted
    from seqtool.plot import with_tensorboard
    from seqtool.training import train as run_training
    from seqtool.ui import TrainingView, note, say

    options = ctx.params
    quiet = options["quiet"]
    given = {
        k: v
        for k, v in options.items()
        if ctx.get_parameter_source(k).name == "COMMANDLINE" and k != "quiet"
    }
    try:
        finished = run_training(
            task,
            options["train_path"],
            options["valid_path"],
            options["out"],
            model_options,
            options,
            TokenizerConfig(options["tokenizer"], options["vocab_size"]),
            task_options,
            resume=options["resume"],
            force=options["force"],
            given=given,
            callbacks=with_tensorboard(TrainingView(quiet), options),
            notify=(lambda message: None) if quiet else note,
        )
    except TrainingInterrupted as stop:
        if stop.main:
            last = f"{options['out']}/last.ckpt"
            say(f"Saved {last}. Resume with:\n  {_resume_command(stop.world)}")
        raise
    if not finished.main or quiet:
        return
    p = finished.progress
    best = "-" if p.best is None else f"{p.best:.4f} at step {p.best_step:,}"
    say(
        f"done: {p.step:,} steps, {p.tokens:,} {finished.unit}, {p.elapsed:.0f}s; best valid "
        f"{finished.metric} {best}; saved {finished.run_dir}/best.ckpt"
    )


def _resume_command(world: int) -> str:
    launcher = ["seqtool"]
    if world > 1:
        launcher = ["torchrun", "--nproc_per_node", str(world), "-m", "seqtool"]
    # the same command, continuing the run: --force would start it over
    args = [a for a in sys.argv[1:] if a not in ("--force", "--resume")]
    return " ".join(shlex.quote(a) for a in [*launcher, *args, "--resume"])


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
    default=defaults(TrainConfig)["seq_len"],
    show_default=True,
    help="Truncated-BPTT window; the hidden state is carried across batches.",
)
@click.option(
    "--tie-weights/--no-tie-weights",
    default=defaults(GeneratorConfig)["tie_weights"],
    show_default=True,
    help="Share the embedding with the output layer.",
)
@training_options("generator", GeneratorConfig)
@click.pass_context
def train_generator(ctx, **options) -> None:
    """Train a character-level (or subword) language model.

    \b
    Example:
      seqtool train generator --train input.txt --out runs/shakes --max-time 10m
    """
    _train(ctx, "generator", _model_options(options, "tie_weights"))


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
@click.option(
    "--bidirectional/--no-bidirectional",
    default=defaults(ClassifierConfig)["bidirectional"],
    show_default=True,
)
@click.option(
    "--pooling",
    type=click.Choice(POOLINGS),
    default=defaults(ClassifierConfig)["pooling"],
    show_default=True,
    help="How the encoder's outputs become one vector; attention can be explained.",
)
@click.option(
    "--multi-label/--single-label",
    default=None,
    help="One sigmoid per label, or one softmax over labels. Default: multi-label when a "
    "training line has several labels (fastText), else single.",
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
    default=defaults(ClassifierConfig)["max_length"],
    show_default=True,
    help="Tokens per line; longer lines are cut with a warning.",
)
@click.option(
    "--ensemble",
    "members",
    type=POSITIVE,
    default=DEFAULT_MEMBERS,
    show_default=True,
    help="Classifiers trained side by side, probabilities averaged; each costs as much "
    "time as one.",
)
@training_options("classifier", ClassifierConfig)
@click.pass_context
def train_classifier(ctx, **options) -> None:
    """Train a recurrent text classifier.

    \b
    Example:
      seqtool train classifier --train sst2/train.tsv --valid sst2/valid.tsv --out runs/sst2
    """
    model_options = _model_options(
        options, "bidirectional", "pooling", "multi_label", "max_length", "members"
    )
    _train(
        ctx,
        "classifier",
        model_options,
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
@data_options("")
@click.option("--joint-vocab", is_flag=True, help="One sentencepiece model for source and target.")
@click.option(
    "--attention",
    type=click.Choice(ATTENTIONS),
    default=defaults(TranslatorConfig)["attention"],
    show_default=True,
    help="bahdanau (additive), luong (multiplicative), none (plain encoder-decoder).",
)
@click.option(
    "--bidirectional/--no-bidirectional",
    default=defaults(TranslatorConfig)["bidirectional"],
    show_default=True,
)
@click.option(
    "--input-feeding/--no-input-feeding",
    default=defaults(TranslatorConfig)["input_feeding"],
    show_default=True,
    help="Feed each step's attentional vector into the next step.",
)
@click.option(
    "--tie-embeddings/--no-tie-embeddings",
    default=defaults(TranslatorConfig)["tie_embeddings"],
    show_default=True,
    help="Share the target embedding with the output layer.",
)
@click.option(
    "--label-smoothing",
    type=Finite(0, 1, max_open=True),
    default=TRAIN_DEFAULTS["translator"]["label_smoothing"],
    show_default=True,
)
@click.option(
    "--batch-tokens",
    type=POSITIVE,
    default=TRAIN_DEFAULTS["translator"]["batch_tokens"],
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
    default=defaults(TranslatorConfig)["max_length"],
    show_default=True,
    help="Tokens per sentence; longer ones are cut with a warning.",
)
@training_options("translator", TranslatorConfig)
@click.pass_context
def train_translator(ctx, **options) -> None:
    """Train an encoder-decoder translator with attention.

    \b
    Example:
      seqtool train translator --train multi30k/train --valid multi30k/valid \\
        --src-lang de --tgt-lang en --out runs/de-en --max-time 45m
    """
    model_options = _model_options(
        options, "bidirectional", "attention", "input_feeding", "tie_embeddings", "max_length"
    )
    _train(
        ctx,
        "translator",
        model_options,
        src_lang=options["src_lang"],
        tgt_lang=options["tgt_lang"],
        joint_vocab=options["joint_vocab"],
        metric=options["early_stop_metric"],
    )


def _imports_torch(command):
    """Import torch before the command runs, with the garbage collector off, then freeze
    what the import made: otherwise the collector passes over those objects again and
    again while they are made, and at every full collection after (0.2 s of `translate
    --text` on 2 cores). A command's `--help` answers before this runs."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        gc.disable()
        try:
            import torch  # noqa: F401
        finally:
            gc.freeze()
            gc.enable()
        return command(*args, **kwargs)

    return run


def _results_to_stdout(command):
    """A reader that goes away (`| head`) ends a command with 141, as a process killed by
    SIGPIPE: quietly, keeping what was printed. Output that cannot be written (`>
    /dev/full`, a full disk) is one Error line."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            _stdout_to_devnull()
            raise click.exceptions.Exit(BROKEN_PIPE) from None
        except OSError as err:
            if err.filename is not None:  # a file's error, not stdout's
                raise
            _stdout_to_devnull()
            raise click.ClickException(
                f"could not write the output ({err.strerror or err})"
            ) from None

    return run


def _stdout_to_devnull() -> None:
    """stdout now leads nowhere: point it at devnull so that the interpreter's last flush
    of what is still buffered cannot fail with another traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _input_lines(input_path: str, text: str | None):
    """The lines to process: --text, a file, or stdin (streamed, never read whole)."""
    if text is not None:
        return iter([text])
    if input_path == "-":
        from seqtool.data import read_stream_lines

        return read_stream_lines(sys.stdin and sys.stdin.buffer)
    from seqtool.data import check_file, read_lines

    return (line for _, line in read_lines(check_file(input_path)))


# `classify` and `translate` read this many batches of lines at a time and sort them by
# length, so that each batch holds lines of similar lengths
SORTED_BATCHES = 16


def _lines_per_read(input_path: str, text: str | None, batch_size: int) -> int:
    """How many input lines `classify` and `translate` read at a time: SORTED_BATCHES
    batches, or one where a person types at a terminal (told so), so that each line is
    answered as soon as it is entered."""
    if text is None and input_path == "-" and sys.stdin and sys.stdin.isatty():
        from seqtool.ui import note

        note("Type a sentence and press Enter; Ctrl-D ends.")
        return 1
    return batch_size * SORTED_BATCHES


def _runs_and_input(args: tuple[str, ...]) -> tuple[list[str], str]:
    """RUN [RUN ...] [INPUT|-]: the first argument is a model, and so is every later
    one that is a checkpoint (a .ckpt file or a directory); the last may be the input."""

    def is_checkpoint(arg: str) -> bool:
        return arg.endswith(".ckpt") or os.path.isdir(arg)

    rest = list(args[1:])
    input_path = rest.pop() if rest and not is_checkpoint(rest[-1]) else "-"
    for arg in rest:
        if not is_checkpoint(arg):
            raise click.UsageError(
                f"{arg}: not a checkpoint (a .ckpt file or a run directory); "
                "only the last argument may be the INPUT file"
            )
    return [args[0], *rest], input_path


@cli.command()
@click.argument("run")
@click.argument("input_path", default="-", metavar="[INPUT|-]")
@click.option("--text", help="Classify this one sentence instead of reading lines.")
@click.option("--top-k", type=POSITIVE, help="Print the k best labels with probabilities.")
@click.option(
    "--threshold",
    type=Finite(0, 1),
    default=CLASSIFY["threshold"],
    show_default=True,
    help="Multi-label models: print every label at least this likely.",
)
@output_options("One JSON object per input line.")
@click.option(
    "--explain", is_flag=True, help="Show which tokens the decision rests on (attention pooling)."
)
@click.option("--batch-size", type=POSITIVE, default=CLASSIFY["batch_size"], show_default=True)
@inference_options
@quantize_option
@_results_to_stdout
@_imports_torch
def classify(
    run, input_path, text, top_k, threshold, as_json, explain, batch_size, device, threads, quantize
):
    """Label each input line (one output line per input line, in order).

    \b
    Example:
      seqtool classify runs/sst2 < sentences.txt
      seqtool classify runs/sst2 --text "a gorgeous , witty film" --top-k 2
    """
    import seqtool
    from seqtool.data import batched
    from seqtool.errors import ConfigError
    from seqtool.ui import attention_bars

    model = seqtool.load(run, task="classifier", device=device, threads=threads, quantize=quantize)
    if explain:
        if text is None:
            raise ConfigError("--explain shows one sentence: give it with --text")
        if model.config.pooling != "attention":
            raise ConfigError(
                f"--explain needs a model trained with --pooling attention "
                f"(this one pools with {model.config.pooling})"
            )
    chunk_size = _lines_per_read(input_path, text, batch_size)
    out = sys.stdout
    for chunk in batched(_input_lines(input_path, text), chunk_size):
        results = model.classify(chunk, top_k=top_k, threshold=threshold, batch_size=batch_size)
        for line, result in zip(chunk, results, strict=True):
            if not line.strip():
                out.write("\n")  # keep one output line per input line
            elif as_json:
                out.write(json.dumps(result.to_dict()) + "\n")
            elif top_k:
                out.write("\t".join(f"{label}\t{p:.4f}" for label, p in result.top) + "\n")
            else:
                out.write(" ".join(result.labels) + "\n")
        out.flush()
    if explain:
        explanation = model.explain(text)
        attention_bars(explanation.pieces, explanation.weights)


@cli.command()
@click.argument("args", nargs=-1, required=True, metavar="RUN... [INPUT|-]")
@click.option("--text", help="Translate this one sentence instead of reading lines.")
@search_options()
@click.option(
    "--n-best",
    type=POSITIVE,
    default=SEARCH["n_best"],
    show_default=True,
    help="Print the N best translations per input line, each with its score after a tab.",
)
@click.option(
    "--max-length-ratio",
    type=Finite(0, MAX_LENGTH_RATIO, min_open=True),
    default=SEARCH["max_length_ratio"],
    show_default=True,
    help="At most ratio x source tokens + 5 target tokens.",
)
@click.option("--batch-size", type=POSITIVE, default=SEARCH["batch_size"], show_default=True)
@output_options("One JSON object per input line.")
@click.option(
    "--show-attention", is_flag=True, help="Draw the attention matrix of the --text sentence."
)
@click.option(
    "--attention-plot",
    type=click.Path(dir_okay=False),
    help="Write the --text sentence's attention as a heatmap image (needs matplotlib).",
)
@inference_options
@quantize_option
@_results_to_stdout
@_imports_torch
def translate(
    args,
    text,
    beam_size,
    length_penalty,
    shortlist,
    n_best,
    max_length_ratio,
    batch_size,
    as_json,
    show_attention,
    attention_plot,
    device,
    threads,
    quantize,
):
    """Translate each input line (one output line per input line, in order).

    Reads INPUT, or stdin when it is piped; typed at a terminal, it translates each
    line as it is entered. Several runs (sharing the target vocabulary) decode as one
    ensemble: their log-probabilities are averaged at every step.

    \b
    Example:
      seqtool translate runs/de-en < test.de > test.hyp
      seqtool translate runs/de-en --text "Ein Hund rennt." --show-attention
      seqtool translate runs/de-en runs/de-en-2 test.de > test.hyp
    """
    import seqtool
    from seqtool.data import batched
    from seqtool.errors import ConfigError
    from seqtool.ui import attention_matrix, note

    if n_best > beam_size:
        raise ConfigError(f"--n-best {n_best} needs --beam-size {n_best} or more")
    runs, input_path = _runs_and_input(args)
    model = seqtool.load(runs, task="translator", device=device, threads=threads, quantize=quantize)
    draw = bool(show_attention or attention_plot)
    if draw:
        if text is None or not text.strip():  # an empty line translates to nothing
            raise ConfigError(
                "--show-attention and --attention-plot draw one sentence: give it with --text"
            )
        if attention_plot:
            from seqtool.plot import check_extra

            check_extra("matplotlib", "plot", "--attention-plot")
    chunk_size = _lines_per_read(input_path, text, batch_size)
    search = dict(
        beam_size=beam_size,
        n_best=n_best,
        length_penalty=length_penalty,
        max_length_ratio=max_length_ratio,
        batch_size=batch_size,
        shortlist=shortlist,
    )
    out = sys.stdout
    for chunk in batched(_input_lines(input_path, text), chunk_size):
        results = model.translate(chunk, **search, attention=draw)
        for result in results:
            if as_json:
                out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            elif n_best > 1:
                found = result.n_best or [("", 0.0)] * n_best  # n_best lines per input line
                out.writelines(f"{t}\t{score:.4f}\n" for t, score in found)
            else:
                out.write(result.text + "\n")
        out.flush()
    if draw:
        best = results[0]
        if show_attention:
            attention_matrix(best.source_tokens, best.target_labels, best.attention)
        if attention_plot:
            from seqtool.plot import attention_heatmap

            attention_heatmap(
                best.source_tokens, best.target_labels, best.attention, attention_plot
            )
            note(f"wrote {attention_plot}")


@cli.command()
@click.argument("run")
@click.option("--prompt", default="", help="Text to start from (printed first).")
@click.option(
    "--length",
    type=POSITIVE,
    default=SAMPLING["length"],
    show_default=True,
    help="Tokens to generate (characters, for a char model).",
)
@click.option(
    "--temperature",
    type=Finite(0),
    default=SAMPLING["temperature"],
    show_default=True,
    help="0 is greedy; higher is more varied.",
)
@click.option("--top-k", type=POSITIVE, help="Sample from the k most likely tokens only.")
@click.option(
    "--top-p",
    type=Finite(0, 1, min_open=True),
    help="Sample from the smallest set of tokens whose probability reaches p.",
)
@click.option(
    "--num-samples",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Samples to print; sample i uses seed + i (short ones are computed as one batch).",
)
@click.option("--seed", type=SEED, help="Same seed, same text.")
@inference_options
@quantize_option
@_results_to_stdout
@_imports_torch
def generate(
    run, prompt, length, temperature, top_k, top_p, num_samples, seed, device, threads, quantize
) -> None:
    """Sample text from a trained generator; long samples stream as they are produced.

    \b
    Example:
      seqtool generate runs/shakes --prompt "ROMEO:" --length 500 --temperature 0.8
    """
    import seqtool
    from seqtool.ui import rule

    model = seqtool.load(run, task="generator", device=device, threads=threads, quantize=quantize)
    sampling = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    out = sys.stdout
    if num_samples > 1 and num_samples * length <= BATCH_TOKENS:
        for i, sample in enumerate(model.generate([prompt] * num_samples, **sampling)):
            rule(f"sample {i + 1}")
            out.write(prompt + sample + "\n")
            out.flush()
        return
    for i in range(num_samples):
        if num_samples > 1:
            rule(f"sample {i + 1}")
        alone = {**sampling, "seed": None if seed is None else seed + i}
        out.write(prompt)
        for piece in model.stream(prompt, **alone):
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option(
    "--data",
    required=True,
    help="Text to score (generator), labelled lines (classifier), or parallel data "
    "(translator: TSV, or a path prefix with --src-lang/--tgt-lang).",
)
@data_options("Translator: ")
@click.option("--batch-size", type=POSITIVE, help="Defaults to the training batch size.")
@click.option(
    "--threshold",
    type=Finite(0, 1),
    default=CLASSIFY["threshold"],
    show_default=True,
    help="Multi-label classifiers: the probability a label needs.",
)
@search_options("Translator: ")
@inference_options
@quantize_option
@output_options("Print one JSON object.")
@_results_to_stdout
@_imports_torch
def evaluate(
    runs,
    data,
    src_lang,
    tgt_lang,
    batch_size,
    threshold,
    beam_size,
    length_penalty,
    shortlist,
    device,
    threads,
    quantize,
    as_json,
) -> None:
    """Score a trained model on a data file.

    \b
    Generator: loss, perplexity, bits_per_char.
    Classifier: accuracy, macro_f1, per-class figures and the confusion matrix.
    Translator: bleu, chrf (sacrebleu, detokenized), loss, perplexity; several
    translator runs are scored as one ensemble.

    \b
    Example:
      seqtool evaluate runs/shakes --data valid.txt --json
      seqtool evaluate runs/sst2 --data sst2/test.tsv
      seqtool evaluate runs/de-en --data multi30k/test2016 --src-lang de --tgt-lang en
      seqtool evaluate runs/de-en runs/de-en-2 --data test.tsv
    """
    import seqtool

    model = seqtool.load(runs, device=device, threads=threads, quantize=quantize)
    options = ("src_lang", "tgt_lang", "batch_size", "threshold", "beam_size", "length_penalty")
    result = model.evaluate(data, **_given(click.get_current_context(), *options, "shortlist"))
    if as_json:
        click.echo(json.dumps(result))
        return
    from seqtool.ui import classification_tables, key_values

    key_values(data, {k: v for k, v in result.items() if not isinstance(v, dict | list)})
    if "per_class" in result:
        classification_tables(result, model.labels)


@cli.command()
@click.argument("run")
@output_options("Print one JSON object.")
@_results_to_stdout
def info(run, as_json) -> None:
    """Show what a checkpoint holds: task, configs, size, progress.

    \b
    Example:
      seqtool info runs/shakes
    """
    from seqtool.inference import info as describe
    from seqtool.ui import key_values

    summary = describe(run)
    if as_json:
        click.echo(json.dumps(summary))
        return
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    flat["vocab_size"] = ", ".join(f"{k} {v:,}" for k, v in summary["vocab_size"].items())
    if "shortlist" in summary:
        table = summary["shortlist"]
        flat["shortlist"] = (
            f"{table['pairs']:,} source-target pairs, {table['frequent']:,} frequent pieces"
            if table
            else "none (--shortlist needs one)"
        )
    key_values("checkpoint", flat)
    if "averaged" in summary:
        key_values("averaged from", {str(i): p for i, p in enumerate(summary["averaged"], 1)})
    for section in ("metrics", "model_config", "tokenizer_config", "train_config"):
        if summary[section]:
            key_values(section, summary[section])


UNIT_HELP = (
    "Shade by one unit: layer:1/cell:137 (layers count from 1, units from 0). Kinds: LSTM "
    "cell, hidden, input, forget, output; GRU reset, update, hidden; RNN hidden."
)


def _given(ctx: click.Context, *names: str) -> dict:
    """The options among `names` the user set: the others keep the library's defaults,
    and a model refuses those it does not take, with one message for every client."""
    return {n: ctx.params[n] for n in names if ctx.get_parameter_source(n).name != "DEFAULT"}


def _read_text(text: str | None, text_file: str | None) -> str:
    if text is not None:
        return text
    if text_file is None:
        raise click.UsageError("give --text or a TEXT_FILE")
    from seqtool.data import check_file, read_text

    return "".join(read_text(check_file(text_file)))


@cli.command("inspect")
@click.argument("run")
@click.argument("text_file", required=False)
@click.option("--text", help="Inspect this text instead of a TEXT_FILE.")
@click.option("--top-k", type=POSITIVE, help="Show the k likeliest pieces at each position.")
@click.option("--unit", help=UNIT_HELP)
@click.option(
    "--find",
    help="quotes, line-position, brackets or a regular expression: rank the units of "
    "--layer by |correlation| with it and shade the best five.",
)
@click.option("--layer", type=POSITIVE, help="The layer --find ranks (from 1; default the last).")
@click.option(
    "--kind",
    type=click.Choice(["cell", "hidden"]),
    help="The state --find ranks: cell (LSTM default) or hidden.",
)
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False), help="Write the views to one HTML file."
)
@click.option(
    "--saturation",
    "saturation_path",
    type=click.Path(dir_okay=False),
    help="Plot each gate's saturation per layer to this PNG (needs the plot extra).",
)
@output_options("Print the per-piece records as one JSON object.")
@inference_options
@_results_to_stdout
@_imports_torch
def inspect_command(
    run, text_file, text, top_k, unit, find, layer, kind, html_path, saturation_path, as_json,
    device, threads,
) -> None:  # fmt: skip
    """See inside a model: how surprised a generator is by each character of a text
    (bits = -log2 p), its units and gates, the units that follow a feature of the text;
    for a translator, each target piece's probability and the source piece it attends
    to most. Pictures go to stderr, the numbers to stdout.

    \b
    Example:
      seqtool inspect runs/shakes --text "ROMEO: What say you?" --top-k 3
      seqtool inspect runs/shakes play.txt --find quotes --html report.html
      seqtool inspect runs/de-en --text "Ein Hund rennt."
    """
    import seqtool
    from seqtool import files, plot
    from seqtool.ui import console

    content = _read_text(text, text_file)
    if saturation_path:
        plot.check_extra("matplotlib", "plot", "--saturation")
    model = seqtool.load(run, device=device, threads=threads)
    options = _given(click.get_current_context(), "top_k", "unit", "find", "layer", "kind")
    found = model.inspect(content, **options, **({"saturation": True} if saturation_path else {}))
    if html_path:
        files.write(html_path, plot.html_report(found, str(run)).encode(), "report")
    if saturation_path:
        plot.saturation_figure(found, saturation_path)
    if as_json:
        click.echo(json.dumps(found.to_dict()))
        return
    for view in plot.terminal_views(found):
        console.print(view)
    for line in found.lines():
        click.echo(line)


@cli.command("plot")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The PNG to write.")
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(["step", "time", "tokens"]),
    default="step",
    show_default=True,
    help="time: elapsed seconds; tokens: seen so far (characters for a char generator), "
    "summed from the logged throughput.",
)
def plot_command(runs, out, x_axis) -> None:
    """Plot training loss and every validation metric of one or more runs (their
    metrics.jsonl), one panel per metric, a line per run.

    \b
    Example:
      seqtool plot runs/a runs/b --out curves.png --x tokens
    """
    from seqtool import plot

    plot.check_extra("matplotlib", "plot", "plot")
    plot.curves(list(runs), out, x_axis)


@cli.command()
@click.argument("run")
@click.argument("piece")
@click.option(
    "--side",
    type=click.Choice(["source", "target"]),
    default="source",
    show_default=True,
    help="Translator: which embeddings.",
)
@click.option("--top-k", type=POSITIVE, default=10, show_default=True, help="How many.")
@output_options("Print one JSON object per neighbour.")
def neighbours(run, piece, side, top_k, as_json) -> None:
    """The pieces nearest PIECE by cosine similarity of the model's embeddings (a
    word piece with its leading space may be written "▁the" or " the").

    \b
    Example:
      seqtool neighbours runs/sst2 ▁good --top-k 5
    """
    import seqtool

    model = seqtool.load(run, device="cpu")
    for n in model.neighbours(piece, **_given(click.get_current_context(), "top_k", "side")):
        if as_json:
            click.echo(json.dumps({"piece": n.piece, "similarity": round(n.similarity, 6)}))
        else:
            click.echo(f"{n.piece}\t{n.similarity:.4f}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="CKPT CKPT...")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The checkpoint to write."
)
def average(runs, out) -> None:
    """Average the weights of checkpoints of one model (same task, configs and
    tokenizers) into one checkpoint; the rest is the last one's. A run directory
    stands for its best.ckpt.

    \b
    Example:
      seqtool average runs/de-en/recent/*.ckpt --out runs/de-en/mean.ckpt
    """
    from seqtool import averaging
    from seqtool.ui import note

    averaging.write(runs, out)
    note(f"saved {out}: the mean of {len(runs)} checkpoints")


def _serve_limits() -> dict:
    from seqtool.serve import Limits  # imports neither fastapi nor torch

    return defaults(Limits)


SERVE = _serve_limits()


def limit_option(flag: str, help: str | None = None):
    """An option of `serve` for the Limits field of the same name, with its default:
    milliseconds may be 0, counts and other numbers are positive."""
    name = flag[2:].replace("-", "_")
    kind = click.FloatRange(min=0) if name.endswith("_ms") else POSITIVE
    if isinstance(SERVE[name], float) and not name.endswith("_ms"):
        kind = click.FloatRange(min=0, min_open=True)
    return click.option(flag, type=kind, default=SERVE[name], show_default=True, help=help)


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN|NAME=RUN...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@inference_options
@limit_option("--max-batch", "Sentences (or generations) per model call; 1 turns batching off.")
@limit_option("--max-wait-ms", "How long a batch waits for more requests.")
@limit_option(
    "--stream-interval-ms",
    "A streamed generation sends its new text at most this often (0: every token).",
)
@limit_option("--max-queue", "Requests waiting per model before 503.")
@limit_option("--max-request-bytes")
@limit_option("--max-sentences", "Per request.")
@limit_option("--max-chars", "Per sentence or prompt.")
@limit_option("--max-length", "Tokens per generation.")
@limit_option("--max-beam", "Translation beam size (and so n-best).")
@limit_option("--max-length-ratio", "Translation length per source length.")
@limit_option("--max-length-penalty", "Translation length penalty (GNMT alpha).")
@limit_option("--max-top-k", "top_k of generate and classify.")
@limit_option("--max-n", "Completions per prompt (/v1/completions n).")
@click.option(
    "--api-key",
    envvar="SEQTOOL_API_KEY",
    help="Require Authorization: Bearer KEY on every route but /health and the page "
    "[env SEQTOOL_API_KEY].",
)
@click.option(
    "--allowed-hosts",
    metavar="NAMES",
    help="Host header names to answer, comma-separated; * any "
    "[default: the loopback names when --host is a loopback address, else any].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="An origin whose pages may call the API (repeatable) [default: none, CORS off].",
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="On SIGTERM or Ctrl-C, how long the whole stop may take (requests in flight, "
    "then the model call running); a second signal stops at once.",
)
@quantize_option
def serve(
    runs, host, port, device, threads, grace_seconds, quantize, allowed_hosts, **limits
) -> None:
    """Serve models over HTTP: a JSON API that batches requests, and a web page at /.

    \b
    Example:
      seqtool serve runs/shakes de-en=runs/translator runs/sst2 --port 8000
    """
    from seqtool.serve import Limits, hosts, serve

    limits = Limits(**limits, allowed_hosts=hosts(allowed_hosts, host))
    serve(list(runs), host, port, limits, device, threads, grace_seconds, quantize)


def main() -> None:
    try:
        cli(prog_name="seqtool")
    except SystemExit as end:
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            # under torchrun, gloo can leave a thread that aborts the interpreter's
            # shutdown ("terminate called without an active exception", exit -6) after
            # the run is saved; nothing is left to tear down, so skip that shutdown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if end.code is None else end.code if isinstance(end.code, int) else 1)
        raise
    finally:
        # importing torch leaves millions of objects that the garbage collector would
        # traverse once more while the interpreter shuts down (about 0.35 s on 2 cores);
        # frozen, they are left to the process's exit, which frees them at once
        gc.freeze()
