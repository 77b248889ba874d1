"""Pictures of what seqtool.inspect and the training loop return: shaded text and
tables for the terminal (rich renderables; cli.py prints them to stderr), one
self-contained HTML page of the same views, matplotlib figures (training curves, gate
saturation) and TensorBoard event files.
"""

from __future__ import annotations

import html
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.style import Style
from rich.table import Table
from rich.text import Text

from seqtool import files
from seqtool.errors import ConfigError, DataError

MAX_BITS = 8.0  # surprise shading saturates here: 8 bits is a 1-in-256 character
SAMPLE = 400  # pieces shown for each unit that --find ranks


def check_extra(module: str, extra: str, option: str) -> None:
    """A one-line error naming the extra to install when `module` is missing."""
    try:
        __import__(module)
    except ImportError:
        # seqtool is installed from its repository (it is not on PyPI), hence -e '.[extra]'
        raise ConfigError(
            f"{option} needs {module}: pip install -e '.[{extra}]' in the seqtool "
            f"repository, or pip install {module}"
        ) from None


# -- colours: white for nothing, red for surprise or a positive value, blue for negative --


def _rgb(value: float) -> tuple[int, int, int]:
    """value in [-1, 1] -> a background colour."""
    v = max(-1.0, min(1.0, value))
    fade = round(255 * (1 - abs(v)))
    return (255, fade, fade) if v >= 0 else (fade, fade, 255)


def _shown(piece: str) -> str:
    return piece.replace("\n", "↵\n").replace("\t", "→")


def _scale(values: list[float]) -> float:
    """Unit values are shaded against their largest magnitude (a cell state is not
    bounded by 1)."""
    return max((abs(v) for v in values), default=1.0) or 1.0


def shaded(pieces: list[str], values: list[float], scale: float) -> Text:
    """The text with each piece's background shaded by value / scale."""
    text = Text()
    for piece, value in zip(pieces, values, strict=True):
        text.append(
            _shown(piece),
            Style(color="black", bgcolor="rgb({},{},{})".format(*_rgb(value / scale))),
        )
    return text


def surprise_view(inspection) -> Text:
    return shaded(inspection.pieces, inspection.bits, MAX_BITS)


def top_table(inspection) -> Table:
    """Per piece: the piece, its bits, and the model's top guesses for that position."""
    table = Table(title="top guesses per position", title_justify="left")
    table.add_column("piece")
    table.add_column("bits", justify="right")
    table.add_column("guesses (probability)")
    for piece, bits, guesses in zip(
        inspection.pieces, inspection.bits, inspection.top, strict=True
    ):
        table.add_row(
            Text(repr(piece)[1:-1]),
            f"{bits:.2f}",
            Text("  ".join(f"{repr(p)[1:-1]} {q:.2f}" for p, q in guesses)),
        )
    return table


def unit_views(inspection) -> Group:
    """Each unit shaded over the text (a sample of it for ranked units)."""
    parts = []
    for unit in inspection.units:
        limit = SAMPLE if unit.correlation is not None else len(unit.values)
        title = (
            unit.name if unit.correlation is None else f"{unit.name}  r = {unit.correlation:+.3f}"
        )
        parts.append(Text(title, style="bold"))
        values = unit.values[:limit]
        parts.append(shaded(inspection.pieces[:limit], values, _scale(values)))
    return Group(*parts)


def translation_table(inspection) -> Table:
    table = Table(title=Text(inspection.text), title_justify="left")
    for column in ("piece", "probability", "attends to", "weight"):
        table.add_column(column, justify="left" if column != "probability" else "right")
    for t in inspection.target:
        weight = "" if t.weight is None else f"{t.weight:.2f}"
        table.add_row(Text(t.piece), f"{t.probability:.3f}", Text(t.source_piece or ""), weight)
    return table


def terminal_views(inspection) -> list:
    """What `seqtool inspect` draws on the terminal for an Inspection or a
    TranslationInspection."""
    if hasattr(inspection, "target"):
        return [translation_table(inspection)]
    views: list = []
    if inspection.bits and not inspection.units:
        views.append(surprise_view(inspection))
    if inspection.top:
        views.append(top_table(inspection))
    if inspection.units:
        views.append(unit_views(inspection))
    return views


# -- one HTML page ------------------------------------------------------------------------

_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}"
    "pre{font-family:monospace;white-space:pre-wrap;line-height:1.5}"
    "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;"
    "border-bottom:1px solid #ddd;font-family:monospace}"
)


def _html_shaded(pieces: list[str], values: list[float], scale: float) -> str:
    spans = (
        '<span style="background:rgb({},{},{})" title="{:.3g}">{}</span>'.format(
            *_rgb(v / scale), v, html.escape(_shown(p))
        )
        for p, v in zip(pieces, values, strict=True)
    )
    return "<pre>" + "".join(spans) + "</pre>"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(inspection, title: str) -> str:
    """The views of an Inspection or TranslationInspection as one page: inline CSS, no
    scripts, nothing fetched."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if hasattr(inspection, "target"):
        rows = [
            [t.piece, f"{t.probability:.3f}", t.source_piece or "",
             "" if t.weight is None else f"{t.weight:.2f}"]
            for t in inspection.target
        ]  # fmt: skip
        parts.append(f"<p>{html.escape(inspection.text)}</p>")
        parts.append(_html_table(["piece", "probability", "attends to", "weight"], rows))
    else:
        if inspection.bits:
            bits = f"{inspection.bits_per_char:.3f} bits per character"
            parts.append(f'<h2 id="surprise">surprise: {bits}</h2>')
            parts.append(_html_shaded(inspection.pieces, inspection.bits, MAX_BITS))
        if inspection.top:
            rows = [
                [repr(p)[1:-1], f"{b:.2f}", "  ".join(f"{repr(g)[1:-1]} {q:.2f}" for g, q in top)]
                for p, b, top in zip(
                    inspection.pieces, inspection.bits, inspection.top, strict=True
                )
            ]
            parts.append("<h2>top guesses per position</h2>")
            parts.append(_html_table(["piece", "bits", "guesses (probability)"], rows))
        for unit in inspection.units:
            limit = SAMPLE if unit.correlation is not None else len(unit.values)
            r = "" if unit.correlation is None else f" r = {unit.correlation:+.3f}"
            # ids let a link (or a screenshot) go straight to a unit's view
            anchor = html.escape(unit.name.replace("/", "-").replace(":", ""))
            parts.append(f'<h2 id="{anchor}">{html.escape(unit.name)}{r}</h2>')
            values = unit.values[:limit]
            parts.append(_html_shaded(inspection.pieces[:limit], values, _scale(values)))
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )


# -- matplotlib figures -------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> None:
    """Write a matplotlib figure to `path` in the format its extension names (png
    without one), through seqtool.files; the figure is closed either way."""
    plt = _pyplot()
    try:
        kind = Path(path).suffix[1:].lower() or "png"
        known = fig.canvas.get_supported_filetypes()
        if kind not in known:
            raise ConfigError(
                f"{path}: matplotlib cannot write .{kind} pictures; use one of "
                + ", ".join(f".{k}" for k in sorted(known))
            )
        with files.replacing(path, "picture") as f:
            fig.savefig(f, format=kind, dpi=fig.dpi)
    finally:
        plt.close(fig)


def attention_heatmap(
    src: list[str], tgt: list[str], weights: list[list[float]], path: str
) -> None:
    """A labelled heatmap image of the attention: source across, target down."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(src), 1 + 0.4 * len(tgt)), dpi=120)
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt)), tgt)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    save_figure(fig, path)


def saturation_figure(inspection, path: str) -> None:
    """Per layer, a scatter per gate kind: each unit's fraction of time left-saturated
    (< 0.1) against right-saturated (> 0.9), as in Karpathy, Johnson and Fei-Fei (2015)."""
    if not inspection.saturation:
        raise ConfigError("--saturation: an RNN layer has no gates to plot")
    plt = _pyplot()
    layers = max(s.layer for s in inspection.saturation)
    fig, axes = plt.subplots(1, layers, figsize=(3.6 * layers, 3.6), squeeze=False, dpi=100)
    for s in inspection.saturation:
        ax = axes[0][s.layer - 1]
        ax.scatter(s.left, s.right, s=8, alpha=0.6, label=s.gate)
        ax.plot([0, 1], [1, 0], color="#bbb", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"layer {s.layer}")
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.set_ylabel("fraction right-saturated (> 0.9)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _finite(value: Any) -> bool:
    """A number a plot can hold: not a bool, NaN or infinite, nor an int too large for a
    float (compared exactly, so nothing overflows)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and abs(value) <= sys.float_info.max


def _is_record(record: Any) -> bool:
    """Whether a line of metrics.jsonl holds what training writes there, with numbers
    where read_metrics and curves read them: an evaluation's {"step", "split": "valid",
    metrics...} or a log record {"step", "loss", "<unit>_per_s", "elapsed", "tokens"}
    (its loss may be NaN: curves skips it)."""
    if not isinstance(record, dict) or not _finite(record.get("step")):
        return False
    rates = [k for k in record if k.endswith("_per_s")]
    if not all(_finite(record[k]) for k in ("elapsed", "tokens", *rates) if k in record):
        return False
    if record.get("split") == "valid":
        return True
    loss = record.get("loss")
    # without its count of tokens, a throughput needs the elapsed time to sum them
    timed = not rates or "tokens" in record or "elapsed" in record
    return (isinstance(loss, float) or _finite(loss)) and timed


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl (or of that file given itself), each with
    `tokens`, the units seen so far: log records hold the count; for files written
    before they did, it is summed from the throughput over the time since the record
    before (close, not exact). Eval records take the tokens of the log record of their
    step or before."""
    path = Path(run)
    path = path / "metrics.jsonl" if files.holds(path, Path.is_dir) else path
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the training metrics ({err.strerror})") from None
    try:
        lines = data.decode("utf-8").split("\n")  # numbered as the UTF-8 error counts them
    except UnicodeDecodeError as err:
        # a checkpoint given as RUN ends here too: say what plot reads
        number = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}:{number}: not UTF-8 text, so not a training log (plot reads RUN/metrics.jsonl)"
        ) from None
    records, tokens, elapsed = [], 0.0, 0.0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # also an int of over 4300 digits, deep nesting
            raise DataError(f"{path}:{number}: not a JSON line") from None
        if not _is_record(record):
            raise DataError(
                f"{path}:{number}: not a training record (a JSON object with its step, "
                "and its loss unless it is an evaluation's)"
            )
        rate = next((v for k, v in record.items() if k.endswith("_per_s")), None)
        if "tokens" in record and rate is not None:
            tokens = record["tokens"]
        elif rate is not None:
            tokens += rate * max(record["elapsed"] - elapsed, 0.0)
            elapsed = record["elapsed"]
        # a throughput x time can overflow to infinity: curves skips a None
        records.append({**record, "tokens": round(tokens) if math.isfinite(tokens) else None})
    return records


def curves(runs: list[str], path: str, x: str = "step") -> None:
    """Training loss and every validation metric of each run, one panel per metric,
    against `x`: "step", "time" (elapsed seconds) or "tokens" (seen so far)."""
    plt = _pyplot()
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for run in runs:
        name = Path(run).name or str(run)
        for record in read_metrics(run):
            at = {
                "step": record["step"],
                "time": record.get("elapsed"),
                "tokens": record["tokens"],
            }[x]
            if record.get("split") == "valid":
                metrics = {
                    f"valid {k}": v for k, v in record.items()
                    if k not in ("step", "split", "best", "tokens", "elapsed")
                    and _finite(v)
                }  # fmt: skip
            else:
                metrics = {"train loss": record["loss"]}
            for metric, value in metrics.items():
                if at is None or not _finite(value):
                    continue
                xs, ys = series.setdefault(metric, {}).setdefault(name, ([], []))
                xs.append(at)
                ys.append(value)
    if not series:
        raise DataError(f"{', '.join(map(str, runs))}: no training records to plot yet")
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3 * rows), squeeze=False, dpi=100
    )
    label = {"step": "step", "time": "elapsed seconds", "tokens": "tokens seen"}[x]
    for ax, (metric, by_run) in zip(axes.flat, sorted(series.items()), strict=False):
        for name, (xs, ys) in by_run.items():
            ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        ax.set(title=metric, xlabel=label)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


# -- TensorBoard --------------------------------------------------------------------------


class TensorBoard:
    """Training callbacks that pass every event on to `view` and write the log and eval
    records as TensorBoard scalars into the run directory, beside metrics.jsonl."""

    def __init__(self, view, run_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.view, self.writer = view, SummaryWriter(log_dir=run_dir)

    def __getattr__(self, name: str):
        return getattr(self.view, name)  # every event this class does not handle itself

    def on_log(self, record: dict[str, Any]) -> None:
        self._scalars("train", record)
        getattr(self.view, "on_log", lambda r: None)(record)

    def on_eval(self, record: dict[str, Any]) -> None:
        self._scalars("valid", record)
        getattr(self.view, "on_eval", lambda r: None)(record)

    def on_end(self, trainer) -> None:
        self.writer.close()
        getattr(self.view, "on_end", lambda t: None)(trainer)

    def _scalars(self, split: str, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, int | float):
                self.writer.add_scalar(f"{split}/{key}", value, record["step"])
        self.writer.flush()


def with_tensorboard(view, run_dir: str):
    """`view`, also writing TensorBoard files into `run_dir` (--tensorboard)."""
    check_extra("tensorboard", "tensorboard", "--tensorboard")
    return TensorBoard(view, run_dir)
