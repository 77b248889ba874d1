"""Looking inside a trained model: how surprised it is by each piece of a text, what
its units and gates do, which units follow a feature of the text, which pieces its
embeddings hold close, and what a translator attends to.

Everything here returns plain lists in frozen dataclasses, so that the command line,
a notebook or a web page can show the same views. The inference classes' `inspect`
and `neighbours` methods call these functions.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

from seqtool.errors import ConfigError
from seqtool.models.recurrent import GATES, TRACE_KINDS, cell_type, trace
from seqtool.tokenizer import BOS_ID, EOS_ID, UNK_ID, StreamDecoder, Tokenizer

FEATURES = ("quotes", "line-position", "brackets")
FIND_KINDS = ("cell", "hidden")
SATURATED = (0.1, 0.9)  # a gate below the first value is left-saturated, above the second right
BEST_UNITS = 5
# the float32 values an inspection may hold at once (1 GiB): every position's
# log-probabilities, and for --unit, --find or --saturation every unit's trace (a 1 MB
# text through the 2x512 LSTM would be 24 GB of traces)
MAX_VALUES = 1 << 28


@dataclass(frozen=True)
class Unit:
    """One unit's value after each piece; `correlation` with the --find feature."""

    layer: int  # from 1
    kind: str  # a key of TRACE_KINDS
    index: int  # from 0
    values: list[float]
    correlation: float | None = None

    @property
    def name(self) -> str:
        return f"layer:{self.layer}/{self.kind}:{self.index}"


@dataclass(frozen=True)
class Saturation:
    """Per unit of one gate of one layer: the fraction of the text's pieces at which the
    gate was below 0.1 (left) and above 0.9 (right)."""

    layer: int
    gate: str
    left: list[float]
    right: list[float]


@dataclass(frozen=True)
class Inspection:
    """What a generator (or classifier) makes of a text, one entry per piece.

    pieces: the text as the model read it, one string per token (a character of a
    character model; "" for the leading bytes of a character it knows only as bytes).
    bits: -log2 p(piece) given the pieces before it (the text starts as after a line
    break); bits_per_char: their sum over the text's characters. Both empty / None for
    a classifier, which predicts no pieces.
    top: per piece, the likeliest pieces at its position, (piece, probability), best
    first. units: the unit asked for, or the best units for `feature`, whose value
    per piece is `feature`. saturation: per layer and gate, when asked for.
    """

    pieces: list[str]
    bits: list[float]
    bits_per_char: float | None
    top: list[list[tuple[str, float]]]
    units: list[Unit]
    feature: list[float] | None
    saturation: list[Saturation]

    def to_dict(self) -> dict[str, Any]:
        """The `inspect --json` object: a record per piece, and the units' summaries."""
        records = []
        for i, piece in enumerate(self.pieces):
            record: dict[str, Any] = {"piece": piece}
            if self.bits:
                record["bits"] = round(self.bits[i], 4)
            if self.top:
                record["top"] = [[p, round(q, 4)] for p, q in self.top[i]]
            if self.feature is not None:
                record["feature"] = self.feature[i]
            if self.units:
                record["units"] = {u.name: round(u.values[i], 4) for u in self.units}
            records.append(record)
        result: dict[str, Any] = {"bits_per_char": self.bits_per_char, "pieces": records}
        if self.units:
            result["units"] = [
                {"unit": u.name, "correlation": u.correlation and round(u.correlation, 4)}
                for u in self.units
            ]
        if self.saturation:
            result["saturation"] = [asdict(s) for s in self.saturation]
        return result

    def lines(self) -> list[str]:
        """The numbers `seqtool inspect` prints to stdout."""
        found = [] if self.bits_per_char is None else [f"bits_per_char {self.bits_per_char:.4f}"]
        return found + [
            f"{u.name} {u.correlation:+.4f}" for u in self.units if u.correlation is not None
        ]


@dataclass(frozen=True)
class TargetPiece:
    """One target piece of a translation: its probability given the source and the
    pieces before it, and the source piece with the most attention (None without
    attention)."""

    piece: str
    probability: float
    source: int | None
    source_piece: str | None
    weight: float | None


@dataclass(frozen=True)
class TranslationInspection:
    source: list[str]
    target: list[TargetPiece]  # the translation's pieces, then </s>
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"translation": self.text, "source_tokens": self.source, "target": [
            {**asdict(t), "probability": round(t.probability, 6),
             "weight": None if t.weight is None else round(t.weight, 4)}
            for t in self.target
        ]}  # fmt: skip

    def lines(self) -> list[str]:
        return [self.text]


# -- features of a text ------------------------------------------------------------------


def feature_values(name: str, text: str) -> list[float]:
    """A value per character of `text`: "quotes" 1 inside double quotes (the quote marks
    included) else 0, "line-position" the characters since the line began, "brackets"
    the depth of (), [] and {}; anything else is a regular expression (^ and $ match at
    each line): 1 inside its matches."""
    values: list[float] = []
    if name == "quotes":
        inside = 0
        for ch in text:
            # the opening mark counts as inside, the closing one too
            inside = inside ^ 1 if ch == '"' else inside
            values.append(1.0 if inside or ch == '"' else 0.0)
    elif name == "line-position":
        position = 0
        for ch in text:
            values.append(float(position))
            position = 0 if ch == "\n" else position + 1
    elif name == "brackets":
        depth = 0
        for ch in text:
            depth += ch in "([{"
            values.append(float(depth))
            depth = max(depth - (ch in ")]}"), 0)
    else:
        try:
            pattern = re.compile(name, re.MULTILINE)  # ^ and $ at every line
        except re.error as err:
            raise ConfigError(f"--find {name!r}: not a regular expression ({err})") from None
        except OverflowError as err:  # a{4294967296}: re says so with another class
            raise ConfigError(f"--find {name!r}: {err}") from None
        except RecursionError:  # the parser recurses once per group
            raise ConfigError(f"--find {name!r}: groups nested too deeply") from None
        values = [0.0] * len(text)
        for match in pattern.finditer(text):
            values[match.start() : match.end()] = [1.0] * (match.end() - match.start())
    return values


def parse_unit(spec: str, cell: str, num_layers: int, size: int) -> tuple[int, str, int]:
    """Parse "layer:1/cell:137" -> (1, "cell", 137): layers count from 1, units from 0."""
    match = re.fullmatch(r"layer:(\d+)/(\w+):(\d+)", spec.strip())
    kinds = TRACE_KINDS[cell]
    if not match:
        raise ConfigError(f"--unit {spec!r}: write it as layer:1/{kinds[-1]}:0")
    # int() refuses over 4300 digits; a number of 100 is out of range anyway
    layer, index = (int(n) if len(n) < 100 else math.inf for n in (match[1], match[3]))
    kind = match[2]
    if kind not in kinds:
        raise ConfigError(f"--unit {spec!r}: a {cell} layer has {', '.join(kinds)}")
    if not 1 <= layer <= num_layers:
        raise ConfigError(f"--unit {spec!r}: layers are 1 to {num_layers}")
    if not 0 <= index < size:
        raise ConfigError(f"--unit {spec!r}: units are 0 to {size - 1}")
    return layer, kind, index


def correlations(activations: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each unit with the feature: activations (time, units),
    feature (time,) -> (units,); 0 where either is constant."""
    a = activations.double() - activations.double().mean(0)
    f = feature.double() - feature.double().mean()
    denominator = a.norm(dim=0) * f.norm()
    return torch.where(denominator > 0, (a * f[:, None]).sum(0) / denominator, 0.0)


# -- generator and classifier ------------------------------------------------------------


def _pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds (a character known only as bytes shows at its last)."""
    decoder = StreamDecoder(tokenizer)
    return [decoder.push(i) for i in ids]


def _label(tokenizer: Tokenizer, token_id: int) -> str:
    return (
        tokenizer.piece(token_id) if tokenizer.is_byte(token_id) else tokenizer.decode([token_id])
    )


def _check_length(positions: int, per_position: int, what: str) -> None:
    most = MAX_VALUES // per_position
    if positions > most:
        raise ConfigError(
            f"inspect: the text is {positions:,} pieces, more than the {most:,} this model "
            f"can {what} at once; give a part of it"
        )


def inspect_recurrent(
    embedding: torch.nn.Embedding,
    rnn: torch.nn.RNNBase,
    tokenizer: Tokenizer,
    ids: list[int],
    context: int,
    unit: str | None,
    find: str | None,
    layer: int | None,
    kind: str | None,
    saturation: bool,
) -> tuple[list[str], list[Unit], list[float] | None, list[Saturation]]:
    """Units and gates over `ids` (the first `context` of them read, not shown), stepped
    one token at a time from the layer's weights (seqtool.models.recurrent.trace)."""
    pieces = _pieces(tokenizer, ids[context:])
    if not (unit or find or saturation):
        return pieces, [], None, []
    cell, size = cell_type(rnn), rnn.hidden_size * (2 if rnn.bidirectional else 1)
    _check_length(len(ids), len(TRACE_KINDS[cell]) * rnn.num_layers * size, "trace")
    # only the LSTM has a cell state apart from its hidden one
    kind = kind or ("cell" if cell == "lstm" else "hidden")
    if kind not in TRACE_KINDS[cell] or kind not in FIND_KINDS:
        raise ConfigError(f"--kind {kind}: a {cell} layer has no {kind} state to rank")
    layer = rnn.num_layers if layer is None else layer
    if not 1 <= layer <= rnn.num_layers:
        raise ConfigError(f"--layer {layer}: layers are 1 to {rnn.num_layers}")
    device = embedding.weight.device
    traced = trace(rnn, embedding(torch.tensor(ids, device=device)))
    traced = {k: v[:, context:].float().cpu() for k, v in traced.items()}
    units, feature = [], None
    if unit:
        at, unit_kind, index = parse_unit(unit, cell, rnn.num_layers, size)
        units.append(Unit(at, unit_kind, index, traced[unit_kind][at - 1, :, index].tolist()))
    if find:
        per_char = feature_values(find, "".join(pieces))
        # a piece takes the value at its last character; a byte before it, the one before
        ends = [len(p) for p in pieces]
        for i in range(1, len(ends)):
            ends[i] += ends[i - 1]
        feature = [per_char[e - 1] if e else 0.0 for e in ends]
        if len(set(feature)) < 2:  # no unit can correlate with a constant
            raise ConfigError(f"--find {find}: the text has nothing of it (it never varies)")
        activations = traced[kind][layer - 1]
        r = correlations(activations, torch.tensor(feature))
        for index in r.abs().argsort(descending=True)[:BEST_UNITS].tolist():
            values = activations[:, index].tolist()
            units.append(Unit(layer, kind, index, values, r[index].item()))
    saturated = []
    if saturation:
        low, high = SATURATED
        for k in range(rnn.num_layers):
            for gate in GATES[cell]:
                values = traced[gate][k]
                left, right = (values < low).float().mean(0), (values > high).float().mean(0)
                saturated.append(Saturation(k + 1, gate, left.tolist(), right.tolist()))
    return pieces, units, feature, saturated


def inspect_generator(
    model,
    tokenizer: Tokenizer,
    text: str,
    top: int = 0,
    unit: str | None = None,
    find: str | None = None,
    layer: int | None = None,
    kind: str | None = None,
    saturation: bool = False,
) -> Inspection:
    """Bits per piece, the `top` likeliest pieces at each position, and the units."""
    if top < 0:
        raise ConfigError(f"top_k {top}: give 0 (none) or more")
    ids = tokenizer.encode(text)
    if not ids:
        raise ConfigError("inspect: the text is empty")
    context = tokenizer.encode("\n")  # start as after a line break, as generate does
    _check_length(len(context) + len(ids), tokenizer.vocab_size, "score")
    device = model.embedding.weight.device
    logits, _ = model(torch.tensor([context + ids[:-1]], device=device))
    log_probs = logits[0, len(context) - 1 :].float().log_softmax(-1).cpu()
    target = torch.tensor(ids)
    bits = (-log_probs.gather(1, target[:, None])[:, 0] / math.log(2)).tolist()
    best = []
    if top:
        probs, best_ids = log_probs.exp().topk(min(top, log_probs.size(1)), dim=1)
        best = [
            [(_label(tokenizer, i), p) for i, p in zip(row_ids, row, strict=True)]
            for row_ids, row in zip(best_ids.tolist(), probs.tolist(), strict=True)
        ]
    pieces, units, feature, saturated = inspect_recurrent(
        model.embedding, model.rnn, tokenizer, context + ids, len(context),
        unit, find, layer, kind, saturation,
    )  # fmt: skip
    chars = sum(len(p) for p in pieces)
    return Inspection(pieces, bits, sum(bits) / max(chars, 1), best, units, feature, saturated)


# -- translator --------------------------------------------------------------------------


def inspect_translation(model, src_tokenizer, tgt_tokenizer, ids: list[int], found) -> Any:
    """Each target piece of the best translation `found` (text, hypothesis) of the
    source `ids`, with its probability under teacher forcing and the source piece it
    attends to most."""
    text, hypothesis = found
    target = list(hypothesis.tokens) + [EOS_ID]
    device = model.out.weight.device
    logits, weights = model(
        torch.tensor([ids], device=device),
        torch.tensor([len(ids)]),
        torch.tensor([[BOS_ID] + target[:-1]], device=device),
    )
    probs = logits[0].float().softmax(-1).cpu()
    source = [src_tokenizer.piece(i) for i in ids]
    pieces = []
    for t, token in enumerate(target):
        label = tgt_tokenizer.piece(token) if token != EOS_ID else "</s>"
        at = weight = None
        if weights is not None:
            weight, at = (w.item() for w in weights[0, t].float().max(0))
            at = int(at)
        pieces.append(
            TargetPiece(
                label, probs[t, token].item(), at, None if at is None else source[at], weight
            )
        )
    return TranslationInspection(source, pieces, text)


# -- embeddings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Neighbour:
    piece: str
    similarity: float


def neighbours(
    weight: torch.Tensor, tokenizer: Tokenizer, piece: str, k: int = 10
) -> list[Neighbour]:
    """The k pieces whose embeddings (rows of `weight` (vocab, dim)) have the highest
    cosine similarity with `piece`'s, best first; the piece itself and the special
    pieces (pad, bos, eos, unk) excluded. A word given with spaces may be written with
    them: " the" is the piece "▁the"."""
    if k < 1:
        raise ConfigError(f"top_k {k}: give 1 or more")
    found = [tokenizer.sp.piece_to_id(p) for p in (piece, piece.replace(" ", "▁"))]
    token = next((i for i in found if i != UNK_ID), UNK_ID)
    if token == UNK_ID and piece != "<unk>":
        raise ConfigError(f"{piece!r} is not a piece of this model's vocabulary")
    vectors = torch.nn.functional.normalize(weight.detach().float().cpu(), dim=1)
    similarity = vectors @ vectors[token]
    similarity[token] = -math.inf
    similarity[: UNK_ID + 1] = -math.inf
    values, ids = similarity.topk(min(k, max(len(similarity) - UNK_ID - 2, 0)))
    return [
        Neighbour(tokenizer.piece(i), v) for i, v in zip(ids.tolist(), values.tolist(), strict=True)
    ]
