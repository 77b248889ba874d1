"""The command line: parse options, call the library, render results.

Each command is one call into the library (seqtool.load, seqtool.api.start,
seqtool.inference.info), with the options seqtool.options declares. Results go to stdout,
everything a person reads goes to stderr through seqtool.ui. Library imports happen
inside the commands, so that every `--help` answers without importing torch.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import shlex
import sys

import click

from seqtool import options as opt
from seqtool.errors import SeqtoolError, printable
from seqtool.version import __version__

INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`
# generate --num-samples prints this many tokens or fewer from one batch; above it each
# sample is sampled and printed alone (same text, as row i is seeded seed + i), so that
# text appears at once and memory does not grow with the output
BATCH_TOKENS = 100_000


class SeqtoolCommand(click.Command):
    """Reads the old names of options (seqtool.options.RENAMED) as today's, with a
    deprecation warning, and keeps the arguments for config.yaml."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = opt.renamed(self.name or "", args)
        ctx.meta["args"] = list(args)
        return super().parse_args(ctx, args)

    def make_context(self, *args, **kwargs) -> click.Context:
        with _writing_stdout():  # --help
            return super().make_context(*args, **kwargs)


class SeqtoolGroup(click.Group):
    """Turns library errors into one `Error: ...` line and exit code 1, and Ctrl-C in
    any command into exit code 130, quietly, keeping what was printed."""

    command_class = SeqtoolCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the whole command line, once
            _check_utf8(args)
        return super().parse_args(ctx, args)

    def make_context(self, *args, **kwargs) -> click.Context:
        with _one_line(), _writing_stdout():  # --help, --version
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        from seqtool.errors import SeqtoolError, TrainingInterrupted

        with _one_line():
            try:
                return super().invoke(ctx)
            except TrainingInterrupted as stop:
                click.echo(f"Interrupted: {stop}.", err=True)
                raise click.exceptions.Exit(INTERRUPTED) from None
            except KeyboardInterrupt:
                with contextlib.suppress(OSError, AttributeError):  # stdout may be closed
                    sys.stdout.flush()
                raise click.exceptions.Exit(INTERRUPTED) from None
            except SeqtoolError as err:
                raise click.ClickException(str(err)) from None
            except ImportError as err:  # a broken install, or too little memory for torch
                raise click.ClickException(f"could not load what seqtool needs ({err})") from None
            except MemoryError:  # an allocation in Python code; torch's are caught nearer
                raise click.ClickException(
                    "out of memory: the input or the sizes given need more than this machine has"
                ) from None


@contextlib.contextmanager
def _one_line():
    """Every error click prints (usage errors, and the SeqtoolErrors above) shows a
    name's control characters as escapes, so that it stays one line (errors.printable)."""
    try:
        yield
    except click.ClickException as err:
        err.message = printable(err.message)
        raise


def _check_utf8(args: list[str], what: str = "the argument") -> None:
    """Arguments are text: Python hands over bytes that are not UTF-8 as lone surrogates,
    which no tokenizer, terminal or JSON encoder takes. Refuse them here, once (and in a
    --config file, where YAML's "\\ud800" makes one)."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as err:
            try:  # the bytes as given, shown as \xe9
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:  # a surrogate that stands for no byte
                shown = arg.encode("utf-8", "backslashreplace").decode()
            raise click.ClickException(
                f"{what} '{shown}' is not valid UTF-8 (at character {err.start + 1}); "
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

    try:  # torch cannot load its libraries from a folder that was removed: oneMKL aborts
        os.getcwd()
    except FileNotFoundError:
        raise click.ClickException(
            "the current folder no longer exists (it was removed); cd to one that does"
        ) from None
    keep_freed_memory()
    _show_warnings()


class TrainGroup(SeqtoolGroup):
    """`seqtool train --config FILE` trains the task the file names."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        name, eq, path = args[0].partition("=") if args else ("", "", "")
        if name == "--config":
            if not eq and len(args) < 2:
                raise click.BadOptionUsage(name, f"Option '{name}' requires an argument.", ctx)
            path = path if eq else args[1]
            try:
                args = [opt.config_task(path), *args]
            except SeqtoolError as err:
                raise click.ClickException(str(err)) from None
        return super().parse_args(ctx, args)


@cli.group(cls=TrainGroup)
def train() -> None:
    """Train a model; each writes RUN_DIR/best.ckpt, last.ckpt, metrics.jsonl and
    config.yaml (the options, which `seqtool train --config RUN_DIR/config.yaml` repeats).

    \b
    Example:
      seqtool train generator --train input.txt --out runs/shakes --max-time 10m
      seqtool train --config runs/shakes/config.yaml --out runs/shakes-2
    """


def _read_config(ctx: click.Context, param, path: str | None):
    """--config: the file's options become the defaults the command line overrides."""
    if path is not None:
        ctx.default_map = opt.config_defaults(path, ctx.command.name, ctx.command.params)
        for name, value in ctx.default_map.items():
            if isinstance(value, str):
                _check_utf8([value], f"{path}: {name.replace('_', '-')}")
    return path


PROCESS_OPTIONS = [
    click.Option(
        ["--config"],
        is_eager=True,
        expose_value=True,
        callback=_read_config,
        metavar="FILE",
        help="Options from a YAML or TOML file (the names of these options); options on "
        "the command line win.",
    ),
    click.Option(
        ["-q", "--quiet"],
        is_flag=True,
        help="Print warnings and errors only (metrics.jsonl still gets every line).",
    ),
]

TRAIN_HELP = {
    "generator": """Train a character-level (or subword) language model.

    \b
    Example:
      seqtool train generator --train input.txt --out runs/shakes --max-time 10m
    """,
    "classifier": """Train a recurrent text classifier.

    \b
    Example:
      seqtool train classifier --train sst2/train.tsv --valid sst2/valid.tsv --out runs/sst2
    """,
    "translator": """Train an encoder-decoder translator with attention.

    \b
    Example:
      seqtool train translator --train multi30k/train --valid multi30k/valid \\
        --src-lang de --tgt-lang en --out runs/de-en --max-time 45m
    """,
}


def _train(task: str) -> None:
    """`seqtool train TASK`: one call of seqtool.api.start, rendered."""

    @train.command(task, params=[*opt.training(task), *PROCESS_OPTIONS], help=TRAIN_HELP[task])
    @click.pass_context
    def command(ctx: click.Context, **values) -> None:
        from seqtool import api
        from seqtool.errors import TrainingInterrupted
        from seqtool.ui import TrainingView, note, say

        quiet = values["quiet"]
        given = {
            k: v
            for k, v in values.items()
            if ctx.get_parameter_source(k).name != "DEFAULT" and k not in opt.PROCESS
        }
        line = api.command_line([*ctx.command_path.split()[1:], *ctx.meta["args"]])
        try:
            finished = api.start(
                task, values, given, line, TrainingView(quiet), None if quiet else note
            )
        except TrainingInterrupted as stop:
            if stop.main:
                last = f"{values['out']}/last.ckpt"
                say(f"Saved {last}. Resume with:\n  {_resume_command(stop.world)}")
            raise
        if not finished.main or quiet:
            return
        p = finished.progress
        best = "-" if p.best is None else f"{p.best:.4f} at step {p.best_step:,}"
        say(
            f"done: {p.step:,} steps, {p.tokens:,} {finished.unit}, {p.elapsed:.0f}s; best "
            f"valid {finished.metric} {best}; saved {printable(str(finished.run_dir))}/best.ckpt"
        )


for _task in TRAIN_HELP:
    _train(_task)


def _resume_command(world: int) -> str:
    launcher = ["seqtool"]
    if world > 1:
        launcher = ["torchrun", "--nproc_per_node", str(world), "-m", "seqtool"]
    # the same command, continuing the run: --force would start it over
    args = [a for a in sys.argv[1:] if a not in ("--force", "--resume")]
    return " ".join(shlex.quote(a) for a in [*launcher, *args, "--resume"])


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
    /dev/full`, a full disk, stdout closed, an encoding without the text's characters) is
    one Error line."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        if sys.stdout is None:  # started with stdout closed (`>&-`): refused before any work
            raise click.ClickException("could not write the output (standard output is closed)")
        with _writing_stdout():
            return command(*args, **kwargs)

    return run


@contextlib.contextmanager
def _writing_stdout():
    """The failures of writing stdout, as _results_to_stdout tells them."""
    try:
        yield
    except UnicodeEncodeError as err:  # PYTHONIOENCODING=ascii, and text that is not
        _stdout_to_devnull()
        raise click.ClickException(
            f"could not write the output (its encoding, {err.encoding}, has no "
            f"{ascii(err.object[err.start : err.end])}; set PYTHONIOENCODING=utf-8)"
        ) from None
    except BrokenPipeError:
        _stdout_to_devnull()
        raise click.exceptions.Exit(BROKEN_PIPE) from None
    except OSError as err:
        if err.filename is not None:  # a file's error, not stdout's
            raise
        _stdout_to_devnull()
        raise click.ClickException(f"could not write the output ({err.strerror or err})") from None


def _stdout_to_devnull() -> None:
    """stdout now leads nowhere: point it at devnull so that the interpreter's last flush
    of what is still buffered cannot fail with another traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _input_lines(input_path: str, text: str | None):
    """The lines to process: --text, a file, or stdin (streamed, never read whole)."""
    if text is not None:
        if input_path != "-":  # the file would be left unread without a word
            raise click.UsageError(f"give --text or an INPUT ({input_path}), not both")
        return iter([text])
    if input_path == "-":
        from seqtool.data import read_stream_lines

        return read_stream_lines(sys.stdin and sys.stdin.buffer)
    from seqtool.data import read_input_lines

    return read_input_lines(input_path)


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


@cli.command(params=opt.CLASSIFY)
@click.argument("run")
@click.argument("input_path", default="-", metavar="[INPUT|-]")
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
        model.check_explainable()
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


@cli.command(params=opt.TRANSLATE)
@click.argument("args", nargs=-1, required=True, metavar="RUN... [INPUT|-]")
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


@cli.command(params=opt.GENERATE)
@click.argument("run")
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


@cli.command(params=opt.EVALUATE)
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
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


@cli.command(params=opt.INFO)
@click.argument("run")
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


def _given(ctx: click.Context, *names: str) -> dict:
    """The options among `names` the user set: the others keep the library's defaults,
    and a model refuses those it does not take, with one message for every client."""
    return {n: ctx.params[n] for n in names if ctx.get_parameter_source(n).name != "DEFAULT"}


def _read_text(text: str | None, text_file: str | None) -> str:
    if text is not None and text_file is not None:
        raise click.UsageError(f"give --text or a TEXT_FILE ({text_file}), not both")
    if text is not None:
        return text
    if text_file is None:
        raise click.UsageError("give --text or a TEXT_FILE")
    from seqtool.data import check_file, read_text

    return "".join(read_text(check_file(text_file)))


@cli.command("inspect", params=opt.INSPECT)
@click.argument("run")
@click.argument("text_file", required=False)
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


@cli.command("plot", params=opt.PLOT)
@click.argument("runs", nargs=-1, required=True)
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


@cli.command(params=opt.NEIGHBOURS)
@click.argument("run")
@click.argument("piece")
@_results_to_stdout
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


@cli.command(params=opt.AVERAGE)
@click.argument("runs", nargs=-1, required=True, metavar="CKPT CKPT...")
def average(runs, out, force) -> None:
    """Average the weights of checkpoints of one model (same task, configs and
    tokenizers) into one checkpoint; the rest is the last one's. A run directory
    stands for its best.ckpt.

    \b
    Example:
      seqtool average runs/de-en/recent/*.ckpt --out runs/de-en/mean.ckpt
    """
    from seqtool import averaging
    from seqtool.ui import note

    averaging.write(runs, out, force)
    note(f"saved {out}: the mean of {len(runs)} checkpoints")


@cli.command(params=opt.serve())
@click.argument("runs", nargs=-1, required=True, metavar="RUN|NAME=RUN...")
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
        if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
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
