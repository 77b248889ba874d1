"""Everything a person sees: messages and the training progress on stderr, tables of
results (`evaluate`, `info`) on stdout, so that `seqtool info RUN > f` keeps them.
"""

from __future__ import annotations

import datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from seqtool.config import MAX_TIME
from seqtool.errors import printable

# soft wrap: long lines (paths) stay whole when stderr is a file or a pipe
console = Console(stderr=True, highlight=False, soft_wrap=True)
results = Console(highlight=False, soft_wrap=True)
if not results.is_terminal or results.width < 20:
    # rich sizes tables to $COLUMNS even into a file, where 0 printed nothing and 24 cut
    # every value: a file gets the tables whole, a terminal of no width 80 columns
    results = Console(highlight=False, soft_wrap=True, width=80 if results.is_terminal else 1000)

# Messages, labels, pieces and file names are user text, printed as rich Text so that a
# `[x]` in them is shown as written, never read as markup (or as an :emoji: code).


def say(message: str) -> None:
    console.print(Text(message))


def note(message: str) -> None:
    console.print(Text(printable(message), style="dim"))


def warn(message: str) -> None:
    console.print(Text.assemble(("Warning:", "yellow"), " ", printable(message)))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return printable(str(value))


class TrainingView:
    """Training callbacks: at a terminal, a progress bar with loss, learning rate,
    throughput and ETA; elsewhere (nohup, a job scheduler, CI) one plain line per
    --log-every steps instead. One line per evaluation either way; `quiet` shows
    neither (warnings and errors still go out)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = console.is_terminal and not quiet  # a bar only where someone sees it
        self.unit = "tokens"  # what the task counts; known once training starts
        self.trainer = None
        self.progress = Progress(
            TextColumn("[bold]step {task.fields[step]}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.bar = None

    def on_start(self, trainer) -> None:
        self.unit = trainer.task.unit
        self.trainer = trainer
        if self.quiet:
            return
        console.print(
            f"device {trainer.device.type}, precision {trainer.precision}, "
            f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters, "
            f"{trainer.task.num_batches():,} batches per epoch"
        )
        if self.live:
            self.progress.start()
            self.bar = self.progress.add_task(
                "train", total=1.0, step=trainer.progress.step, loss="-", lr="-", speed=""
            )

    def on_step(self, trainer) -> None:
        if self.live:
            self.progress.update(
                self.bar, completed=trainer.fraction_done(), step=trainer.progress.step
            )

    def on_log(self, record: dict[str, Any]) -> None:
        speed = f"{record.get(f'{self.unit}_per_s', 0.0):,.0f} {self.unit}/s"
        if self.live:
            self.progress.update(
                self.bar, loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", speed=speed
            )
        elif not self.quiet:
            console.print(Text(log_line(record, speed, self.trainer.fraction_done())))

    def on_eval(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        hidden = ("step", "split", "best", "examples")
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in hidden)
        line = Text(f"step {record['step']:,} valid: {shown}")
        if record.get("best"):
            line.append(" best", style="green")
        self.progress.console.print(line)
        for example in record.get("examples", []):
            # the training data's text: an escape sequence in it is shown, not obeyed
            src, ref, hyp = (
                escape(printable(example[k])) for k in ("source", "reference", "translation")
            )
            self.progress.console.print(
                f"  [dim]src[/dim] {src}\n  [dim]ref[/dim] {ref}\n  [dim]hyp[/dim] {hyp}"
            )

    def on_note(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(Text(printable(message), style="dim"))

    def on_end(self, trainer) -> None:
        if self.live:
            self.progress.stop()


def log_line(record: dict[str, Any], speed: str, done: float) -> str:
    """A progress line for a log file: step, epoch, loss, lr, speed, elapsed, ETA."""
    elapsed = record["elapsed"]
    eta = elapsed * (1 - done) / done if done > 0 else None

    def clock(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        # the ETA of a budget far larger than the time spent (--max-epochs 1e9) is beyond
        # what timedelta holds
        if not seconds <= MAX_TIME:
            return "over a year"
        return str(datetime.timedelta(seconds=round(seconds)))

    return (
        f"step {record['step']:,}  epoch {record['epoch']:.2f}  loss {record['loss']:.4f}  "
        f"lr {record['lr']:.2e}  {speed}  elapsed {clock(elapsed)}  ETA {clock(eta)}"
    )


def key_values(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=Text(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(Text(key), Text(_fmt(value)))
    results.print(table)


def rule(text: str) -> None:
    console.rule(Text(text))


def classification_tables(report: dict[str, Any], labels: list[str]) -> None:
    """Per-class precision, recall, F1 and support, then the confusion matrix."""
    table = Table(title="per class", title_justify="left")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, row in report["per_class"].items():
        table.add_row(
            Text(label),
            *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1")),
            f"{row['support']:,}",
        )
    results.print(table)
    if "confusion" not in report:
        return
    matrix = Table(title="confusion (rows: gold, columns: predicted)", title_justify="left")
    matrix.add_column("")
    for label in labels:
        matrix.add_column(Text(label), justify="right")
    for label, row in zip(labels, report["confusion"], strict=True):
        matrix.add_row(Text(label), *(f"{n:,}" for n in row))
    results.print(matrix)


def attention_bars(pieces: list[str], weights: list[float]) -> None:
    """One line per token: the token, its attention weight and a bar of that length."""
    top = max(weights) or 1.0
    for piece, weight in zip(pieces, weights, strict=True):
        bar = "█" * round(30 * weight / top)
        console.print(Text.assemble(f"{piece:>16} {weight:6.3f} ", (bar, "cyan")))


_SHADES = " ░▒▓█"


def attention_matrix(src: list[str], tgt: list[str], weights: list[list[float]]) -> None:
    """Source pieces across, one column each (a space between columns, so that every
    piece can be read in the header), target pieces down; each cell is shaded by its
    weight (each row sums to 1), so the alignment shows as a dark path."""
    widths = [max(2, cell_len(piece)) for piece in src]
    margin = max((cell_len(piece) for piece in tgt), default=0) + 1

    def pad(text: str, width: int) -> str:
        return text + " " * (width - cell_len(text))

    header = " ".join(pad(piece, w) for piece, w in zip(src, widths, strict=True))
    console.print(Text(" " * margin + header, style="bold"))
    for piece, row in zip(tgt, weights, strict=True):
        cells = (_SHADES[min(4, round(w * 4))] * n for w, n in zip(row, widths, strict=True))
        console.print(Text(pad(piece, margin) + " ".join(cells)))
