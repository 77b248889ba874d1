"""Every option of the command line, declared once.

The options `seqtool train` shares across tasks and each task's own, and the groups
other commands share (search, inference, output), with their defaults read from the
config dataclasses. `seqtool.train` checks a Python caller's keyword options with these
same declarations (`resolve`), so a default and a check live in one place. Also here:
the old option names kept for a release (`renamed`) and the `--config` files of `train`.
Imports neither torch nor the library's heavy modules: every `--help` answers at once.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import click

from seqtool.config import (
    ATTENTIONS,
    CELLS,
    DEFAULT_MEMBERS,
    DEFAULT_TOKENIZER,
    MAX_COUNT,
    MAX_LAYERS,
    MAX_LENGTH_RATIO,
    MAX_MEMBERS,
    MAX_THREADS,
    MAX_VOCAB,
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
    is_device,
    parse_duration,
)
from seqtool.errors import ConfigError, first_line, printable, warn

# bounded so that a size reaches torch as a number it can allocate or refuse (2**62 makes
# a tensor size overflow)
POSITIVE = click.IntRange(1, MAX_COUNT)
# an epoch is a step or more: more epochs than --max-steps takes steps are no budget
# either, and their ETA overflowed the clock
MAX_EPOCHS = POSITIVE.max
# what torch.manual_seed takes, less one bit: sampling seeds rows seed + i
SEED = click.IntRange(0, 2**63 - 1)
MAX_CONFIG_BYTES = 1 << 20
THREADS = click.IntRange(1, MAX_THREADS)
SEARCH = defaults(SearchConfig)
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "loss")
TRANSLATOR_METRICS = ("bleu", "loss")


class Device(click.ParamType):
    """--device: auto, cpu, cuda, cuda:N (one GPU of several) or mps."""

    name = "device"

    def get_metavar(self, param, ctx=None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value, param, ctx):
        if not isinstance(value, str) or not is_device(value):
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


def _duration(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_duration(str(value))
    except ConfigError as err:
        raise click.BadParameter(str(err)) from None


def _option(*decls: str, **attrs) -> click.Option:
    return click.Option(list(decls), **attrs)


def _choice(flag: str, choices, default, help: str | None = None) -> click.Option:
    return _option(flag, type=click.Choice(choices), default=default, show_default=True, help=help)


# -- train: what every task shares ------------------------------------------------------


def _named(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A run directory of "" (an unset shell variable, `--out "$RUN"`) is the current
    folder to the file system: refused rather than trained into."""
    if value == "":
        raise click.BadParameter("the name is empty; give the run directory", ctx, param)
    return value


def _shared_training(task: str, model_config) -> list[click.Option]:
    """Options every `train` command has, with the same names everywhere; their
    defaults come from the task's model config and TRAIN_DEFAULTS."""
    model = defaults(model_config)
    run = {**defaults(TrainConfig), **TRAIN_DEFAULTS[task]}

    def number(flag: str, kind, default, help: str | None = None, **attrs) -> click.Option:
        return _option(flag, type=kind, default=default, show_default=True, help=help, **attrs)

    return [
        _option(
            "--out",
            required=True,
            type=click.Path(file_okay=False, path_type=str),
            callback=_named,
            help="Run directory for checkpoints, metrics.jsonl and config.yaml.",
        ),
        _choice("--cell", CELLS, model["cell"], "Recurrent cell; rnn is the basic Elman network."),
        number("--layers", click.IntRange(1, MAX_LAYERS), model["num_layers"]),
        number("--hidden-size", POSITIVE, model["hidden_size"]),
        number("--embedding-size", POSITIVE, model["embedding_size"]),
        number("--dropout", Finite(0, 1, max_open=True), model["dropout"]),
        number(
            "--batch-size",
            POSITIVE,
            run["batch_size"],
            "Examples per batch (a translator's: most sentence pairs; see --batch-tokens).",
        ),
        number("--lr", Finite(0, min_open=True), run["lr"], "Peak learning rate (AdamW)."),
        number("--weight-decay", Finite(0), run["weight_decay"]),
        number("--clip", Finite(0), run["clip"], "Clip the gradient norm to this; 0 turns it off."),
        _choice(
            "--schedule",
            SCHEDULES,
            run["schedule"],
            "Learning rate after warmup: cosine decay to lr/10 over the budget.",
        ),
        number("--warmup-steps", click.IntRange(min=0), run["warmup_steps"]),
        number(
            "--average-last",
            click.IntRange(min=0),
            run["average_last"],
            "Keep the weights of the last N evaluations in RUN_DIR/recent/ and write their "
            "mean to RUN_DIR/averaged.ckpt at the end; 0 turns it off.",
            metavar="N",
        ),
        number(
            "--ema",
            Finite(0, 1, max_open=True),
            run["ema"],
            "Validate and save an exponential moving average of the weights, updated each "
            "step with decay min(DECAY, (step + 1) / (step + 10)); 0 turns it off.",
            metavar="DECAY",
        ),
        _option("--max-steps", type=POSITIVE, help="Budget in optimizer steps."),
        _option(
            "--max-epochs",
            type=Finite(0, MAX_EPOCHS, min_open=True),
            help="Budget in passes over the training data.",
        ),
        _option(
            "--max-time",
            callback=_duration,
            metavar="DURATION",
            help="Budget in wall time: 90s, 10m, 2h.",
        ),
        number(
            "--eval-every",
            POSITIVE,
            run["eval_every"],
            "Validate (and save checkpoints) every N steps.",
        ),
        number("--log-every", POSITIVE, run["log_every"]),
        _option("--patience", type=POSITIVE, help="Stop after N evaluations without improvement."),
        number("--seed", SEED, run["seed"]),
        number("--device", Device(), run["device"]),
        _choice(
            "--precision",
            PRECISIONS,
            run["precision"],
            "auto: bf16 where the hardware runs it natively, else fp32.",
        ),
        _option("--threads", type=THREADS, help="CPU threads for torch."),
        _choice("--tokenizer", TOKENIZERS, DEFAULT_TOKENIZER[task]),
        _option(
            "--vocab-size",
            type=click.IntRange(1, MAX_VOCAB),
            help="Sentencepiece vocabulary size (adjusted with a warning if it does not fit "
            "the corpus).",
        ),
        _option("--resume", is_flag=True, help="Continue RUN_DIR/last.ckpt exactly."),
        _option("--force", is_flag=True, help="Start over in a RUN_DIR that holds a run."),
        _option(
            "--tensorboard",
            is_flag=True,
            help="Also write TensorBoard event files into the run directory.",
        ),
    ]


def _flag(name: str, default: bool, help: str | None = None) -> click.Option:
    return _option(f"--{name}/--no-{name}", default=default, show_default=True, help=help)


def _max_length(config, what: str) -> click.Option:
    return _option(
        "--max-length",
        type=POSITIVE,
        default=defaults(config)["max_length"],
        show_default=True,
        help=f"Tokens per {what}; longer ones are cut with a warning.",
    )


def _word_dropout(config, what: str) -> click.Option:
    return _option(
        "--word-dropout",
        type=Finite(0, 1, max_open=True),
        default=defaults(config)["word_dropout"],
        show_default=True,
        help=f"Share of {what} left out at random in training (their embedding zeroed), on "
        "top of --dropout.",
    )


def data(what: str) -> list[click.Option]:
    """--src-lang / --tgt-lang: parallel data as aligned files `PREFIX.LANG`."""
    return [
        _option("--src-lang", help=f"{what}source suffix: --src-lang de reads PREFIX.de."),
        _option("--tgt-lang", help=f"{what}target suffix: --tgt-lang en reads PREFIX.en."),
    ]


# each task's own options of `train`: its data and its model
OWN_TRAINING = {
    "generator": [
        _option("--train", required=True, help="Training text file (UTF-8)."),
        _option(
            "--valid", help="Validation text file; without it the last 10% of --train is held out."
        ),
        _option(
            "--seq-len",
            type=POSITIVE,
            default=defaults(TrainConfig)["seq_len"],
            show_default=True,
            help="Truncated-BPTT window; the hidden state is carried across batches.",
        ),
        _flag(
            "tie-embeddings",
            defaults(GeneratorConfig)["tie_embeddings"],
            "Share the embedding with the output layer.",
        ),
    ],
    "classifier": [
        _option(
            "--train",
            required=True,
            help="Labelled lines: TSV label<TAB>text, or fastText __label__X text.",
        ),
        _option("--valid", help="Validation file; without it a random 10% of --train is held out."),
        _flag("bidirectional", defaults(ClassifierConfig)["bidirectional"]),
        _word_dropout(ClassifierConfig, "a training line's pieces"),
        _choice(
            "--pooling",
            POOLINGS,
            defaults(ClassifierConfig)["pooling"],
            "How the encoder's outputs become one vector; attention can be explained.",
        ),
        _option(
            "--multi-label/--single-label",
            default=None,
            help="One sigmoid per label, or one softmax over labels. Default: multi-label "
            "when a training line has several labels (fastText), else single.",
        ),
        _option(
            "--class-weights",
            type=click.Choice(["balanced"]),
            help="Weight the loss against skewed label counts.",
        ),
        _choice(
            "--early-stop-metric",
            CLASSIFIER_METRICS,
            "accuracy",
            "What best.ckpt and --patience follow.",
        ),
        _max_length(ClassifierConfig, "line"),
        _option(
            "--ensemble",
            type=click.IntRange(1, MAX_MEMBERS),
            default=DEFAULT_MEMBERS,
            show_default=True,
            help="Classifiers trained side by side, probabilities averaged; each costs as "
            "much time as one.",
        ),
    ],
    "translator": [
        _option(
            "--train",
            required=True,
            help="TSV file (source<TAB>target), or a path prefix with --src-lang/--tgt-lang.",
        ),
        _option(
            "--valid", help="Validation data; without it random pairs of --train are held out."
        ),
        *data(""),
        _option(
            "--joint-vocab", is_flag=True, help="One sentencepiece model for source and target."
        ),
        _choice(
            "--attention",
            ATTENTIONS,
            defaults(TranslatorConfig)["attention"],
            "bahdanau (additive), luong (multiplicative), none (plain encoder-decoder).",
        ),
        _flag("bidirectional", defaults(TranslatorConfig)["bidirectional"]),
        _flag(
            "input-feeding",
            defaults(TranslatorConfig)["input_feeding"],
            "Feed each step's attentional vector into the next step.",
        ),
        _flag(
            "tie-embeddings",
            defaults(TranslatorConfig)["tie_embeddings"],
            "Share the target embedding with the output layer.",
        ),
        _option(
            "--label-smoothing",
            type=Finite(0, 1, max_open=True),
            default=TRAIN_DEFAULTS["translator"]["label_smoothing"],
            show_default=True,
        ),
        _option(
            "--batch-tokens",
            type=POSITIVE,
            default=TRAIN_DEFAULTS["translator"]["batch_tokens"],
            show_default=True,
            help="Most padded tokens per batch (the longer side); batches are length buckets.",
        ),
        _choice(
            "--early-stop-metric",
            TRANSLATOR_METRICS,
            "bleu",
            "What best.ckpt and --patience follow (BLEU of greedy output on --valid).",
        ),
        _word_dropout(TranslatorConfig, "source and target-input pieces"),
        _max_length(TranslatorConfig, "sentence"),
    ],
}


MODEL_CONFIGS = {
    "generator": GeneratorConfig,
    "classifier": ClassifierConfig,
    "translator": TranslatorConfig,
}


def training(task: str) -> list[click.Parameter]:
    """Every option of `seqtool train TASK`, the task's own first."""
    return [*OWN_TRAINING[task], *_shared_training(task, MODEL_CONFIGS[task])]


# the options of `train` that are about this process, not the run: not in config.yaml
PROCESS = ("resume", "force", "quiet", "config")


def resolve(params: list[click.Parameter], values: dict[str, Any], what: str) -> dict[str, Any]:
    """Every option of a command, from a Python caller's keyword values (by option name,
    `hidden_size` for --hidden-size; old names with a DeprecationWarning): each value
    checked and converted as the command line does, the defaults for the rest. Raises
    ConfigError naming the option."""
    known = {p.name: p for p in params}
    values = dict(values)
    for old, new in RENAMED.get(what.split()[-1], {}).items():
        old, new = old[2:].replace("-", "_"), new[2:].replace("-", "_")
        if old in values:
            warnings.warn(f"{old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=3)
            values[new] = values.pop(old)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{what} has no option {unknown[0]!r}")
    ctx = click.Context(click.Command(what, params=params))
    for name, param in known.items():
        given = {name: values[name]} if name in values else {}
        try:  # as the command line reads a value, or the default
            param.handle_parse_result(ctx, given, [])
        except click.MissingParameter:
            raise ConfigError(f"{what} needs {name}=") from None
        except click.BadParameter as err:
            raise ConfigError(f"{name}={values.get(name)!r}: {err.message}") from None
    # click marks a value never set with a sentinel (8.3), or None before
    unset = click.Option(["--unset"]).get_default(ctx)
    return {k: None if v is unset else v for k, v in ctx.params.items()}


# -- the groups other commands share ----------------------------------------------------


def search(what: str = "") -> list[click.Option]:
    """Beam search settings shared by translate and evaluate."""
    return [
        _option(
            "--beam-size",
            type=POSITIVE,
            default=SEARCH["beam_size"],
            show_default=True,
            help=f"{what}1 is greedy search.",
        ),
        _option(
            "--length-penalty",
            type=Finite(0),
            default=SEARCH["length_penalty"],
            show_default=True,
            help=f"{what}GNMT alpha: scores are log-prob / ((5 + length) / 6) ** alpha; "
            "0 turns it off.",
        ),
        _option(
            "--shortlist",
            is_flag=True,
            help=f"{what}search each batch over the target pieces seen with its source pieces "
            "in training only: faster, nearly the same translations (see README).",
        ),
    ]


INFERENCE = [
    _option(
        "--device",
        type=Device(),
        default="auto",
        show_default=True,
        help="auto: a GPU when there is one, else the CPU.",
    ),
    _option("--threads", type=THREADS, help="CPU threads for torch."),
]

QUANTIZE = _option(
    "--quantize",
    type=click.Choice(QUANTIZATIONS),
    default="none",
    show_default=True,
    help="int8: linear and recurrent layers in dynamic int8, on the CPU only; faster for "
    "hidden sizes of 256 and up, slightly less exact (see README).",
)


def as_json(help: str) -> click.Option:
    return _option("--json", "as_json", is_flag=True, help=help)


def _limit(flag: str, help: str | None = None) -> click.Option:
    """An option of `serve` for the Limits field of the same name, with its default:
    milliseconds may be 0, counts and other numbers are positive."""
    from seqtool.serve import MAX_MS, Limits  # imports neither fastapi nor torch

    default = defaults(Limits)[flag[2:].replace("-", "_")]
    kind = Finite(0, MAX_MS) if flag.endswith("-ms") else POSITIVE
    if isinstance(default, float) and not flag.endswith("-ms"):
        kind = Finite(min=0, min_open=True)
    return _option(flag, type=kind, default=default, show_default=True, help=help)


UNIT_HELP = (
    "Shade by one unit: layer:1/cell:137 (layers count from 1, units from 0). Kinds: LSTM "
    "cell, hidden, input, forget, output; GRU reset, update, hidden; RNN hidden."
)


# -- the other commands' options, in the order --help lists them --------------------

CLASSIFY = [
    _option("--text", help="Classify this one sentence instead of reading lines."),
    _option("--top-k", type=POSITIVE, help="Print the k best labels with probabilities."),
    _option(
        "--threshold",
        type=Finite(0, 1),
        default=defaults(ClassifyConfig)["threshold"],
        show_default=True,
        help="Multi-label models: print every label at least this likely.",
    ),
    as_json("One JSON object per input line."),
    _option(
        "--explain",
        is_flag=True,
        help="Show which tokens the decision rests on (attention pooling).",
    ),
    _option(
        "--batch-size",
        type=POSITIVE,
        default=defaults(ClassifyConfig)["batch_size"],
        show_default=True,
    ),
    *INFERENCE,
    QUANTIZE,
]

TRANSLATE = [
    _option("--text", help="Translate this one sentence instead of reading lines."),
    *search(),
    _option(
        "--n-best",
        type=POSITIVE,
        default=SEARCH["n_best"],
        show_default=True,
        help="Print the N best translations per input line, each with its score after a tab.",
    ),
    _option(
        "--max-length-ratio",
        type=Finite(0, MAX_LENGTH_RATIO, min_open=True),
        default=SEARCH["max_length_ratio"],
        show_default=True,
        help="At most ratio x source tokens + 5 target tokens.",
    ),
    _option("--batch-size", type=POSITIVE, default=SEARCH["batch_size"], show_default=True),
    as_json("One JSON object per input line."),
    _option(
        "--show-attention", is_flag=True, help="Draw the attention matrix of the --text sentence."
    ),
    _option(
        "--attention-plot",
        type=click.Path(dir_okay=False),
        help="Write the --text sentence's attention as a heatmap image (needs matplotlib).",
    ),
    *INFERENCE,
    QUANTIZE,
]

GENERATE = [
    _option("--prompt", default="", help="Text to start from (printed first)."),
    _option(
        "--length",
        type=POSITIVE,
        default=defaults(SamplingConfig)["length"],
        show_default=True,
        help="Tokens to generate (characters, for a char model).",
    ),
    _option(
        "--temperature",
        type=Finite(0),
        default=defaults(SamplingConfig)["temperature"],
        show_default=True,
        help="0 is greedy; higher is more varied.",
    ),
    _option("--top-k", type=POSITIVE, help="Sample from the k most likely tokens only."),
    _option(
        "--top-p",
        type=Finite(0, 1, min_open=True),
        help="Sample from the smallest set of tokens whose probability reaches p.",
    ),
    _option(
        "--num-samples",
        type=POSITIVE,
        default=1,
        show_default=True,
        help="Samples to print; sample i uses seed + i (short ones are computed as one batch).",
    ),
    _option("--seed", type=SEED, help="Same seed, same text."),
    *INFERENCE,
    QUANTIZE,
]

EVALUATE = [
    _option(
        "--data",
        required=True,
        help="Text to score (generator), labelled lines (classifier), or parallel data "
        "(translator: TSV, or a path prefix with --src-lang/--tgt-lang).",
    ),
    *data("Translator: "),
    _option("--batch-size", type=POSITIVE, help="Defaults to the training batch size."),
    _option(
        "--threshold",
        type=Finite(0, 1),
        default=defaults(ClassifyConfig)["threshold"],
        show_default=True,
        help="Multi-label classifiers: the probability a label needs.",
    ),
    *search("Translator: "),
    *INFERENCE,
    QUANTIZE,
    as_json("Print one JSON object."),
]

INFO = [
    as_json("Print one JSON object."),
]

INSPECT = [
    _option("--text", help="Inspect this text instead of a TEXT_FILE."),
    _option("--top-k", type=POSITIVE, help="Show the k likeliest pieces at each position."),
    _option("--unit", help=UNIT_HELP),
    _option(
        "--find",
        help="quotes, line-position, brackets or a regular expression: rank the units of "
        "--layer by |correlation| with it and shade the best five.",
    ),
    _option("--layer", type=POSITIVE, help="The layer --find ranks (from 1; default the last)."),
    _option(
        "--kind",
        type=click.Choice(["cell", "hidden"]),
        help="The state --find ranks: cell (LSTM default) or hidden.",
    ),
    _option(
        "--html",
        "html_path",
        type=click.Path(dir_okay=False),
        help="Write the views to one HTML file.",
    ),
    _option(
        "--saturation",
        "saturation_path",
        type=click.Path(dir_okay=False),
        help="Plot each gate's saturation per layer to this PNG (needs the plot extra).",
    ),
    as_json("Print the per-piece records as one JSON object."),
    *INFERENCE,
]

PLOT = [
    _option("--out", required=True, type=click.Path(dir_okay=False), help="The PNG to write."),
    _option(
        "--x",
        "x_axis",
        type=click.Choice(["step", "time", "tokens"]),
        default="step",
        show_default=True,
        help="time: elapsed seconds; tokens: seen so far (characters for a char generator), "
        "summed from the logged throughput.",
    ),
]

NEIGHBOURS = [
    _option(
        "--side",
        type=click.Choice(["source", "target"]),
        default="source",
        show_default=True,
        help="Translator: which embeddings.",
    ),
    _option("--top-k", type=POSITIVE, default=10, show_default=True, help="How many."),
    as_json("Print one JSON object per neighbour."),
]

AVERAGE = [
    _option(
        "--out", required=True, type=click.Path(dir_okay=False), help="The checkpoint to write."
    ),
    _option("--force", is_flag=True, help="Replace --out when it already exists."),
]


def serve() -> list[click.Parameter]:
    """The options of `serve`: built when the command line is, so that importing this
    module (as seqtool.train does) does not import the server's package."""
    from seqtool.serve import MAX_GRACE_SECONDS

    return [
        _option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
        _option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True),
        *INFERENCE,
        _limit("--max-batch", "Sentences (or generations) per model call; 1 turns batching off."),
        _limit("--max-wait-ms", "How long a batch waits for more requests."),
        _limit(
            "--stream-interval-ms",
            "A streamed generation sends its new text at most this often (0: every token).",
        ),
        _limit("--max-queue", "Requests waiting per model before 503."),
        _limit("--max-request-bytes"),
        _limit("--max-sentences", "Per request."),
        _limit("--max-chars", "Per sentence or prompt."),
        _limit("--max-generate-length", "Tokens per generation (generate length, max_tokens)."),
        _limit("--max-beam", "Translation beam size (and so n-best)."),
        _limit("--max-length-ratio", "Translation length per source length."),
        _limit("--max-length-penalty", "Translation length penalty (GNMT alpha)."),
        _limit("--max-top-k", "top_k of generate and classify."),
        _limit("--max-n", "Completions per prompt (/v1/completions n)."),
        _option(
            "--api-key",
            envvar="SEQTOOL_API_KEY",
            help="Require Authorization: Bearer KEY on every route but /health and the page "
            "[env SEQTOOL_API_KEY].",
        ),
        _option(
            "--allowed-hosts",
            metavar="NAMES",
            help="Host header names to answer, comma-separated; * any "
            "[default: the loopback names when --host is a loopback address, else any].",
        ),
        _option(
            "--cors-origin",
            "cors_origins",
            multiple=True,
            metavar="ORIGIN",
            help="An origin whose pages may call the API (repeatable) [default: none, CORS off].",
        ),
        _option(
            "--grace-seconds",
            type=Finite(0, MAX_GRACE_SECONDS),
            default=30.0,
            show_default=True,
            help="On SIGTERM or Ctrl-C, how long the whole stop may take (requests in flight, "
            "then the model call running); a second signal stops at once.",
        ),
        QUANTIZE,
    ]


# -- old names, kept for a release ------------------------------------------------------

# command name -> {old option: new option}; the old ones are hidden from --help
RENAMED: dict[str, dict[str, str]] = {
    "generator": {"--tie-weights": "--tie-embeddings", "--no-tie-weights": "--no-tie-embeddings"},
    "inspect": {"--top": "--top-k"},
    "neighbours": {"--k": "--top-k"},
    # in `train`, --max-length is the cut of a training line
    "serve": {"--max-length": "--max-generate-length"},
}


def renamed(command: str, args: list[str]) -> list[str]:
    """`args` with the old option names of `command` replaced by today's, each with a
    deprecation warning (options after `--` are arguments, left alone)."""
    table = RENAMED.get(command, {})
    out = list(args)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name in table:
            warn(f"{name} is deprecated and will be removed; use {table[name]}")
            out[i] = table[name] + eq + value
    return out


# -- config files -----------------------------------------------------------------------

CONFIG_NAME = "config.yaml"  # what `train` writes into the run directory


# configs read from a pipe, which gives its bytes once: `seqtool train --config <(...)`
# reads the file for its task (config_task), then for its options (read_config)
_STREAMS_READ: dict[str, dict[str, Any]] = {}


def read_config(path: str) -> dict[str, Any]:
    """A YAML or TOML file of option names and values (hidden-size or hidden_size), and
    `task`. Raises ConfigError for a file that cannot be read or is not a mapping."""
    from seqtool import files
    from seqtool.data import check_file

    if path in _STREAMS_READ:  # read for its task, now for its options
        return _STREAMS_READ.pop(path)
    file = Path(path)
    if not files.is_stream(file):  # a pipe (`--config <(...)`) is read once like a file
        check_file(path)
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    if len(raw) > MAX_CONFIG_BYTES:  # a corpus given by mistake, /dev/zero
        raise ConfigError(
            f"{path}: more than {MAX_CONFIG_BYTES:,} bytes, too large for a config of "
            "option names and values; is it the right file?"
        )
    try:
        text = raw.decode("utf-8-sig")
        if file.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            found = tomllib.loads(text)
        else:
            import yaml

            found = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the config ({first_line(err)})") from None
    except Exception as err:  # noqa: BLE001 (yaml's errors share no base with ValueError)
        raise ConfigError(f"{path}: cannot read the config ({first_line(err)})") from None
    if not isinstance(found, dict) or not all(isinstance(k, str) for k in found):
        raise ConfigError(
            f"{path}: a config is a mapping of option names to values (YAML; TOML in a "
            "file whose name ends in .toml)"
        )
    return {k.replace("-", "_"): v for k, v in found.items()}


def config_defaults(path: str, command: str, params: list[click.Parameter]) -> dict[str, Any]:
    """The options a config file sets for `seqtool train COMMAND`, checked against its
    options: what the command line then overrides."""
    found = read_config(path)
    task = found.pop("task", command)
    if not isinstance(task, str):
        raise ConfigError(f"{path}: task is a {type(task).__name__}; give {command}")
    if task != command:
        raise ConfigError(f"{path} is a config of a {task}, not of a {command}")
    table = {old[2:].replace("-", "_"): new[2:].replace("-", "_")
             for old, new in RENAMED.get(command, {}).items()}  # fmt: skip
    found = {table.get(k, k): v for k, v in found.items()}
    names = {p.name for p in params} - set(PROCESS)
    unknown = sorted(set(found) - names)
    if unknown:
        flag = "--" + unknown[0].replace("_", "-")
        raise ConfigError(f"{path}: {unknown[0]!r} is not an option of train {command} ({flag})")
    integers = {p.name for p in params if isinstance(p.type, click.types.IntParamType)}
    flags = {p.name for p in params if getattr(p, "is_flag", False)}
    for name, value in found.items():
        if isinstance(value, bool) and name not in flags:  # click reads true as 1
            raise ConfigError(f"{path}: {name.replace('_', '-')} is {value}; give a value")
        # a list or a mapping is no option's value, and is never printed: YAML's aliases
        # can make a small file into a structure of billions of items
        if value is not None and not isinstance(value, str | int | float):
            kind = type(value).__name__
            raise ConfigError(f"{path}: {name.replace('_', '-')} is a {kind}; give one value")
        if name in integers and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path}: {name.replace('_', '-')} is {value}; give a whole number")
    return found


def config_task(path: str) -> str:
    """The task a config file is for (its `task` key)."""
    from seqtool import files

    found = read_config(path)
    if files.is_stream(Path(path)):  # it gives its bytes once: kept for config_defaults
        _STREAMS_READ[path] = found
    task = found.get("task")
    if not isinstance(task, str):
        raise ConfigError(f"{path}: no task in the config; add task: generator (or classifier, "
                          "translator), or name it: seqtool train TASK --config FILE")  # fmt: skip
    return task


def config_text(task: str, values: dict[str, Any], command_line: str) -> str:
    """config.yaml of a run: the command line as a comment, then `task` and every option
    that is set, by its name on the command line."""
    import yaml

    body = {"task": task}
    body.update({k.replace("_", "-"): v for k, v in values.items() if v is not None})
    # a file name may hold a line break, which would end the comment, or a control
    # character, which YAML refuses even in a comment: both are written escaped
    header = (
        f"# {printable(command_line)}\n# repeat: seqtool train --config THIS_FILE --out NEW_DIR\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
