"""The generator task: a language model trained with truncated BPTT on one text file."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from seqtool import checkpoint, decoding, distributed, files, metrics
from seqtool.config import GeneratorConfig, SamplingConfig, TokenizerConfig, TrainConfig
from seqtool.data import (
    LMStream,
    TextLines,
    TokenArray,
    batched,
    check_file,
    encode_file,
    holdout_offset,
    read_meta,
    read_text,
    to_device,
)
from seqtool.errors import ConfigError, DataError
from seqtool.loaded import Loaded, keyword_options
from seqtool.models.generator import GeneratorModel
from seqtool.tasks import Notify, TrainRequest, restored, training_data
from seqtool.tokenizer import StreamDecoder, Tokenizer

if TYPE_CHECKING:  # looking inside is imported when used: start-up stays small
    from seqtool.inspect import Inspection, Neighbour

SAMPLING = SamplingConfig()

# The sizes --max-time chooses among, smallest first: (layers, hidden size). The largest
# is the default, which a long budget keeps.
SIZES = ((1, 128), (1, 256), (1, 512), (2, 512))
# The rule (bench/analysis.md, from bench/sweep.py): the largest size that sees at least
# this many training tokens per parameter in the budget, at the step speed measured on
# this machine. Fewer, and a smaller model that sees more text ends better.
TOKENS_PER_PARAMETER = 3.0
# Dropout only pays once the budget goes over the training text this many times (in
# less, every window is new) and holds this many steps without it (in fewer the model is
# still learning fast, and dropout slows that more than it saves from overfitting: on
# Greek at 20 s, 11 epochs in 1,125 steps, 1x256 ended 4.5% better without; on Python
# source at 120 s, 6.7 epochs in 2,800 steps, 1x512 ended 5% better with 0.2).
DROPOUT_EPOCHS = 5.0
DROPOUT_STEPS = 2000


class GeneratorTask:
    name = "generator"
    unit = "chars"
    metric = "loss"
    higher_is_better = False
    tie_break = None
    sizing: str | None = None  # what --max-time chose (fit_to_budget), kept in checkpoints

    def __init__(
        self,
        model_config: GeneratorConfig,
        tokenizer: Tokenizer,
        tokenizer_config: TokenizerConfig,
        train: TokenArray,
        valid: TokenArray,
        config: TrainConfig,
        source: str,
    ) -> None:
        self.model_config, self.tokenizer = model_config, tokenizer
        self.tokenizer_config = tokenizer_config
        self.train_stream = LMStream(train.ids, config.batch_size, config.seq_len)
        if self.train_stream.num_batches == 0:
            need = config.batch_size * config.seq_len + 1
            raise DataError(
                f"{source}: {len(train.ids)} training tokens are fewer than one batch window "
                f"needs ({config.batch_size} x {config.seq_len} + 1 = {need}); "
                f"lower --batch-size or --seq-len"
            )
        if config.batch_size % distributed.world():
            raise ConfigError(
                f"--batch-size {config.batch_size} (streams in all) must divide evenly among "
                f"{distributed.world()} processes"
            )
        self.valid, self.config = valid, config
        self.unigram = unigram_log_probs(train, model_config.vocab_size)
        self.build(model_config)
        self.hidden = None  # carried from batch to batch within an epoch

    def build(self, model_config: GeneratorConfig) -> None:
        """Make `model_config` the task's model, as the options would build it."""
        self.model_config = model_config
        torch.manual_seed(self.config.seed)
        self.model = GeneratorModel(model_config)
        self.model.init_output_bias(self.unigram)

    def fit_to_budget(
        self,
        step_seconds: Callable[[GeneratorConfig], float],
        budget: float,
        given: set[str],
        notify: Notify,
    ) -> bool:
        """Choose the size (SIZES) and dropout for `budget` seconds: the largest size that
        sees TOKENS_PER_PARAMETER tokens per parameter at the speed `step_seconds(config)`
        measures (smallest first, until one falls short or comes close), dropout only
        over DROPOUT_EPOCHS and DROPOUT_STEPS. Sizes are timed without dropout when it is
        ours to choose: whether to add it is decided from the speed without it. What the
        user set (--hidden-size or --layers; --dropout) is kept. True when the model was
        rebuilt."""
        choose_size = not given & {"hidden_size", "layers"}
        choose_dropout = "dropout" not in given
        if not choose_size and not choose_dropout:
            return False
        sizes = (
            SIZES
            if choose_size
            else ((self.model_config.num_layers, self.model_config.hidden_size),)
        )
        dropout = self.model_config.dropout
        timed = 0.0 if choose_dropout else dropout
        window = self.config.batch_size * self.config.seq_len  # tokens a step trains on
        chosen = None
        for layers, hidden in sizes:
            candidate = dataclasses.replace(
                self.model_config, num_layers=layers, hidden_size=hidden, dropout=timed
            )
            seconds = step_seconds(candidate)
            parameters = sum(p.numel() for p in self.model.parameters())
            steps = budget / seconds
            if chosen is not None and steps * window / parameters < TOKENS_PER_PARAMETER:
                break
            chosen = (candidate, parameters, steps, seconds)
            if steps * window / parameters < 5 * TOKENS_PER_PARAMETER:
                break  # each next size sees 5-10x fewer per parameter: not worth timing
        candidate, parameters, steps, seconds = chosen
        tokens, epochs = steps * window, steps / self.num_batches()
        if choose_dropout:
            long_enough = epochs >= DROPOUT_EPOCHS and steps >= DROPOUT_STEPS
            candidate = dataclasses.replace(candidate, dropout=dropout if long_enough else 0.0)
        size = f"{candidate.num_layers}x{candidate.hidden_size} {candidate.cell.upper()}"
        self.sizing = (
            f"--max-time {budget:.0f}s: a {size} ({parameters / 1e6:.2f}M parameters) "
            f"sees about {tokens / 1e6:.1f}M tokens in {steps:,.0f} steps of the {seconds:.3f} s "
            f"measured here{' without dropout' if choose_dropout else ''} "
            f"({tokens / parameters:.1f} per parameter, {epochs:.1f} epochs), "
            f"dropout {candidate.dropout:g} (set --hidden-size, --layers or --dropout to choose)"
        )
        notify(self.sizing)
        self.build(candidate)
        return True

    def num_batches(self) -> int:
        return self.train_stream.num_batches

    def start_epoch(self, epoch: int) -> None:
        self.hidden = None

    def train_loss(self, model, index: int, device: torch.device):
        inputs, targets = self.train_stream.batch(index)
        tokens = targets.numel()  # in the whole batch, over all processes
        mine = distributed.rows(len(inputs))  # each process runs its own streams
        inputs, targets = (to_device(t[mine], device) for t in (inputs, targets))
        logits, state = model(inputs, self.hidden)
        self.hidden = _detach(state)
        return lm_loss(logits, targets), tokens

    def evaluate(self, model, device: torch.device) -> dict[str, float]:
        return evaluate_lm(model, self.valid, self.config.batch_size, self.config.seq_len, device)

    def state_dict(self) -> dict[str, Any]:
        return {"hidden": _to_cpu(self.hidden)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        hidden = state["hidden"]
        if hidden is not None:
            # the state the streams carry on with: (h, c) for an LSTM, else h, each
            # (layers, this process's rows, hidden)
            c, mine = self.model_config, distributed.rows(self.train_stream.rows)
            shape = (c.num_layers, mine.stop - mine.start, c.hidden_size)
            parts = hidden if isinstance(hidden, list | tuple) else (hidden,)
            if len(parts) != (2 if c.cell == "lstm" else 1) or any(
                not isinstance(t, torch.Tensor) or t.shape != shape for t in parts
            ):
                raise ValueError(f"task_state's hidden is not the {c.cell}'s state {list(shape)}")
            hidden = tuple(t.to(device) for t in parts) if c.cell == "lstm" else parts[0].to(device)
        self.hidden = hidden

    def checkpoint_info(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model_config": self.model_config.to_dict(),
            "tokenizer_config": self.tokenizer_config.to_dict(),
            "tokenizers": {"text": self.tokenizer.proto},
        }


def unigram_log_probs(data: TokenArray, vocab_size: int) -> torch.Tensor:
    """Add-one smoothed log frequency of every token id in the training data."""
    counts = data.counts[:vocab_size] + 1.0
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (batch, time, vocab) against targets (batch, time).

    The model's logits are a time-major tensor seen batch-first, so the loss is taken in
    time-major order, where flattening needs no copy of the logits.
    """
    return F.cross_entropy(
        logits.transpose(0, 1).flatten(0, 1).float(), targets.t().flatten(), reduction=reduction
    )


def evaluate_lm(model, data: TokenArray, batch_size: int, seq_len: int, device) -> dict[str, float]:
    """Every token of `data` scored once, state carried: loss, perplexity, bits per char."""
    stream = LMStream.for_eval(data.ids, batch_size, seq_len)
    total, count, state = 0.0, 0, None
    batches = [stream.batch(i) for i in range(stream.num_batches)]
    if len(stream.remainder) > 1:
        rest = torch.from_numpy(stream.remainder.astype("int64"))[None]
        batches.append((rest[:, :-1], rest[:, 1:]))
    for index, (inputs, targets) in enumerate(batches):
        if index == stream.num_batches:
            state = None  # the remainder is a separate, single-row stream
        logits, state = model(inputs.to(device), state)
        total += lm_loss(logits, targets.to(device), reduction="sum").item()
        count += targets.numel()
    loss = total / count
    return {
        "loss": loss,
        "perplexity": metrics.perplexity(loss),
        "bits_per_char": metrics.bits_per_char(loss, data.chars_per_token),
        "tokens": count,
    }


def prepare(request: TrainRequest, notify: Notify) -> GeneratorTask:
    """Read and tokenize the corpus, and build the task (a fresh model, or the resumed
    run's tokenizer and model config)."""
    config = request.config
    train_file = check_file(request.train)
    valid_file = check_file(request.valid) if request.valid else None
    _check_not_empty(train_file)
    if valid_file:
        _check_not_empty(valid_file)
        train_range, valid_range = (0, None), (0, None)
    else:
        cut = holdout_offset(train_file)
        if cut == 0:
            raise DataError(f"{train_file}: too short to hold a tenth out; give --valid too")
        train_range, valid_range = (0, cut), (cut, None)
        notify(f"no --valid given: holding out the last 10% of {train_file} for validation")
    cache = request.run_dir / "data"
    data = training_data(request, [train_file])
    if request.resume is not None:
        model_config, tokenizer_config = restored(request, GeneratorConfig, GeneratorModel)
        tokenizer = checkpoint.tokenizer(request.resume)
    else:
        tokenizer_config = request.tokenizer
        tokenizer = _tokenizer(
            cache, train_file, data["sha256"], train_range, tokenizer_config, notify
        )
        model_config = GeneratorConfig(vocab_size=tokenizer.vocab_size, **request.model_options)
    started = time.perf_counter()
    train = encode_file(
        train_file, tokenizer, cache / "train.ids", *train_range, sha256=data["sha256"]
    )
    seconds = time.perf_counter() - started
    size = ((train_range[1] or train_file.stat().st_size) - train_range[0]) / 1e6
    notify(
        f"{train_file}: {train.num_chars:,} characters, {len(train.ids):,} tokens, "
        f"vocabulary {tokenizer.vocab_size:,} ({size:.1f} MB tokenized or cached in {seconds:.1f}s)"
    )
    valid = encode_file(
        valid_file or train_file,
        tokenizer,
        cache / "valid.ids",
        *valid_range,
        sha256=None if valid_file else data["sha256"],
    )
    if len(valid.ids) < 2:
        raise DataError(f"{valid_file or train_file}: too little validation text (under 2 tokens)")
    torch.manual_seed(config.seed)
    task = GeneratorTask(
        model_config, tokenizer, tokenizer_config, train, valid, config, str(train_file)
    )
    task.data = data
    return task


def _tokenizer(
    cache: Path,
    path: Path,
    sha256: str,
    byte_range: tuple[int, int | None],
    config: TokenizerConfig,
    notify: Callable[[str], None],
) -> Tokenizer:
    """Train the tokenizer, or take the one an earlier run in this directory trained on
    the same file, range and settings: on a large corpus training takes a while, and
    one trained anew may differ (sentencepiece samples large corpora), which would void
    the token cache. The file is known by its contents (`sha256`), and the model by its
    own digest, so that a model file replaced or cut short is not taken."""
    key = {"sha256": sha256, "range": list(byte_range), "config": config.to_dict()}
    meta, model = cache / "tokenizer.json", cache / "tokenizer.model"
    proto = model.read_bytes() if model.exists() else b""
    if read_meta(meta) == {**key, "model": hashlib.sha256(proto).hexdigest()}:
        return Tokenizer(proto)
    lines = TextLines(path, *byte_range)
    # a generator models one character stream: "auto" reads it as characters
    kind = "char" if config.kind == "auto" else config.kind
    tokenizer, warning = Tokenizer.train(lines, kind, config.vocab_size)
    if warning:
        notify(warning)
    if distributed.is_main():
        files.folder(cache, "tokenizer cache")
        files.write(model, tokenizer.proto, "tokenizer cache")
        model_sha256 = hashlib.sha256(tokenizer.proto).hexdigest()
        files.write(meta, json.dumps({**key, "model": model_sha256}).encode(), "tokenizer cache")
    return tokenizer


def _check_not_empty(path: Path) -> None:
    if not any(block.strip() for block in read_text(path)):
        what = "is empty" if path.stat().st_size == 0 else "holds only whitespace"
        raise DataError(f"{path}: the file {what}; give a text file with content")


class Generator(Loaded):
    """A trained language model: `generate`, `stream`, `evaluate`, `info`.

    Sampling: temperature 0 is greedy; top_k keeps the k likeliest tokens, top_p the
    smallest set whose probability reaches p. With a seed the text is repeatable: row i
    of a batch (a list of prompts) samples with seed + i, and gets the same text as
    that prompt alone with that seed.
    """

    task = "generator"
    streams = True

    def __init__(self, ckpt: dict[str, Any], device: torch.device, quantize: str = "none") -> None:
        super().__init__(ckpt, device, quantize)
        self.model = self._ready(checkpoint.restore_model(ckpt, GeneratorConfig, GeneratorModel))
        self.tokenizer = checkpoint.tokenizer(ckpt)

    def _ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt or "\n")  # no prompt: start as after a line break

    def _tokens(
        self, prompts: list[str], options: SamplingConfig, seed: int | None
    ) -> Iterator[torch.Tensor]:
        ids = [self._ids(p) for p in prompts]
        seeds = decoding.seeds_for(len(prompts), seed)
        o = options
        return decoding.sample(self.model, ids, o.length, o.temperature, o.top_k, o.top_p, seeds)

    def stream(
        self,
        prompt: str = "",
        *,
        length: int = SAMPLING.length,
        temperature: float = SAMPLING.temperature,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the text after `prompt` as it is sampled (`length` tokens in all)."""
        options = SamplingConfig(length, temperature, top_k, top_p)
        decoder = StreamDecoder(self.tokenizer)
        steps = self._tokens([prompt], options, seed)
        # read tokens back a few at a time: on a GPU each read waits for the device, and
        # one wait per character would stall the queue of sampling steps
        group = 1 if self.device.type == "cpu" else 16
        with torch.inference_mode():
            for chunk in batched(steps, group):
                text = "".join(decoder.push(t) for t in torch.cat(chunk).tolist())
                if text:
                    yield text
        rest = decoder.flush()
        if rest:
            yield rest

    def generate(
        self,
        prompt: str | list[str] = "",
        *,
        length: int = SAMPLING.length,
        temperature: float = SAMPLING.temperature,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> str | list[str]:
        """The text sampled after `prompt`; a list of prompts is sampled as one batch
        and gives a list of texts."""
        options = SamplingConfig(length, temperature, top_k, top_p)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            return []
        with torch.inference_mode():
            rows = torch.stack(list(self._tokens(prompts, options, seed)), dim=1).tolist()
        texts = [self.tokenizer.decode(row) for row in rows]
        return texts[0] if isinstance(prompt, str) else texts

    __call__ = generate  # model(prompts, ...), as a pipeline is called

    def stream_many(
        self,
        prompts: str | Sequence[str] = (),
        *,
        length: int = SAMPLING.length,
        temperature: float = SAMPLING.temperature,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Streams:
        """Generations sampled as one continuously batched set: `prompts` now, and more
        added while it runs (`Streams.add`, each with its own options). Iterate it for
        (index, text) as the text is sampled. Prompt i samples with seed + i and gets
        the text `generate` gives it, alone or in a list."""
        SamplingConfig(length, temperature, top_k, top_p)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        options = {"length": length, "temperature": temperature, "top_k": top_k, "top_p": top_p}
        streams = Streams(self)
        for prompt, row_seed in zip(prompts, decoding.seeds_for(len(prompts), seed), strict=True):
            streams.add(prompt, seed=row_seed, **options)
        return streams

    @keyword_options
    def evaluate(
        self, data: str | os.PathLike | Sequence[str], *, batch_size: int | None = None
    ) -> dict[str, float]:
        """loss, perplexity, bits_per_char and tokens of a text file, or of a list of
        lines read as one text, state carried."""
        batch_size = batch_size or self.train_config.get("batch_size", 64)
        seq_len = self.train_config.get("seq_len", 128)
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            path = Path(tmp) / "data.txt"
            if isinstance(data, str | os.PathLike):
                path = check_file(data)
            elif not any(data):
                raise DataError("evaluate: no text given")
            else:
                path.write_text("".join(line + "\n" for line in data), encoding="utf-8")
            tokens = encode_file(path, self.tokenizer, Path(tmp) / "data.ids")
            return evaluate_lm(self.model, tokens, batch_size, seq_len, self.device)

    @keyword_options
    def inspect(
        self,
        text: str,
        *,
        top_k: int = 0,
        unit: str | None = None,
        find: str | None = None,
        layer: int | None = None,
        kind: str | None = None,
        saturation: bool = False,
    ) -> Inspection:
        """How surprised the model is by each piece of `text` (bits), its `top_k` likeliest
        pieces at each position, one `unit` ("layer:1/cell:137": layers from 1, units
        from 0), the best units of `layer` (default the last) of `kind` ("cell", the
        default for an LSTM, or "hidden") for the feature `find` ("quotes",
        "line-position", "brackets" or a regular expression), and gate saturation.
        See seqtool.inspect."""
        from seqtool.inspect import inspect_generator

        self._fp32("inspect")
        with torch.inference_mode():
            return inspect_generator(
                self.model, self.tokenizer, text, top_k, unit, find, layer, kind, saturation
            )

    @keyword_options
    def neighbours(self, piece: str, *, top_k: int = 10) -> list[Neighbour]:
        """The top_k pieces nearest `piece` by cosine similarity of the embeddings."""
        from seqtool.inspect import neighbours

        return neighbours(self.model.embedding.weight, self.tokenizer, piece, top_k)


class _Generation:
    """One generation of a Streams: its text decoder, the step at which it has all its
    tokens, and its tokens not yet decoded."""

    def __init__(self, decoder: StreamDecoder, end: int, first: int) -> None:
        self.decoder, self.end, self.ids = decoder, end, [first]


class Streams:
    """Generations sampled as one continuously batched set (`Generator.stream_many`).

    `add` starts a generation: its prompt is read and its first token chosen at once,
    and it joins the running batch. `step` samples the next token of every generation
    in the batch in one model call and returns their new text; a generation leaves the
    batch when it has its length or is cancelled. Each draws its noise from its own
    seed, so it gets the text `Generator.generate` gives it alone, whatever runs beside
    it and whenever it joins.

    `step` is `advance` then `texts`: a caller that wants text less often than every
    step (the server, every --stream-interval-ms) calls `advance` each step and `texts`
    when it wants them, and the tokens of many steps are decoded at once.
    """

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.batch = decoding.Batch(generator.model)
        self.rows: list[int] = []  # the generation of each row of the batch
        self.open: dict[int, _Generation] = {}  # those not ended, by index, in the order added
        self.added = 0
        self.steps = 0  # steps taken
        self.tokens: list[list[int]] = []  # each step's tokens by row, not yet handed out
        self.next_end = 0  # the first step at which a generation in the batch is complete

    def __len__(self) -> int:
        return len(self.open)

    def __contains__(self, index: int) -> bool:
        """Whether generation `index` goes on: neither ended (its last text taken) nor
        cancelled."""
        return index in self.open

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """The (index, text) of step after step, until no generation is left (one may be
        added meanwhile)."""
        while self.open:
            yield from self.step()

    def add(
        self,
        prompt: str = "",
        *,
        length: int = SAMPLING.length,
        temperature: float = SAMPLING.temperature,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> int:
        """Start a generation of `length` tokens after `prompt`; return its index (0, 1,
        ... in the order added). Its prompt is read and its first token chosen now, its
        text comes with the next step. Bad options raise here (ConfigError), and nothing
        joins the batch unless all went well."""
        (added,) = self.add_many([
            {"prompt": prompt, "length": length, "temperature": temperature, "top_k": top_k,
             "top_p": top_p, "seed": seed}
        ])  # fmt: skip
        if isinstance(added, Exception):
            raise added
        return added

    @torch.inference_mode()
    def add_many(self, requests: list[dict[str, Any]]) -> list[int | Exception]:
        """`add` for several generations at once, each given as `add`'s keyword
        arguments (and "prompt"): those with the same sampling options join the batch in
        one model call, which reads each distinct prompt once. Returns each one's index,
        or the error its own values raised (then nothing of it joined): a bad one never
        keeps the others out."""
        added: list[int | Exception | None] = [None] * len(requests)
        groups: dict[decoding.Options, list[tuple[int, list[int], int, int]]] = {}
        for i, request in enumerate(requests):
            try:
                ask = _ADD.bind(self, **request)  # an unknown name is a TypeError
                ask.apply_defaults()
                a = ask.arguments
                options = (a["temperature"], a["top_k"], a["top_p"])
                SamplingConfig(a["length"], *options)
                ids, length = self.generator._ids(a["prompt"]), a["length"]
                (seed,) = decoding.seeds_for(1, a["seed"])
            except Exception as err:  # noqa: BLE001 - each request's fault is its own
                added[i] = err
                continue
            groups.setdefault(options, []).append((i, ids, length, seed))
        self._hand_out()  # the rows are about to change
        joined: list[tuple[int, int, int]] = []  # (position, length, first token) by row
        for options, members in groups.items():
            try:
                joined += self._join(options, members)
            except Exception:  # noqa: BLE001 - one member's values: find it, keep the rest
                for member in members:
                    try:
                        joined += self._join(options, [member])
                    except Exception as err:  # noqa: BLE001
                        added[member[0]] = err
        # indices in the order asked; rows in the order joined
        for i in sorted(i for i, _, _ in joined):
            added[i], self.added = self.added, self.added + 1
        for i, length, token in joined:
            self.rows.append(added[i])
            decoder = StreamDecoder(self.generator.tokenizer)
            self.open[added[i]] = _Generation(decoder, self.steps + length - 1, token)
        self._leave()  # those of length 1: they have their token
        return added  # type: ignore[return-value]

    def _join(self, options, members: list[tuple[int, list[int], int, int]]) -> list:
        """Join `members` (position, prompt ids, length, seed) to the batch in one call:
        their (position, length, first token); nothing changes if it raises."""
        tokens = self.batch.join([m[1] for m in members], options, [m[3] for m in members])
        return [(m[0], m[2], t) for m, t in zip(members, tokens.tolist(), strict=True)]

    @torch.inference_mode()
    def step(self) -> list[tuple[int, str]]:
        """Sample the next token of every generation in the batch (one model call); return
        (index, text) of every generation that had not ended: its text since the last
        step ("" while a character's bytes are incomplete). A generation that reaches its
        length ends here with its last text."""
        self.advance()
        return self.texts()

    @torch.inference_mode()
    def advance(self) -> bool:
        """Sample the next token of every generation in the batch (one model call), and
        keep the tokens for `texts`; True when a generation now has all its tokens."""
        if not self.rows:
            return False
        self.tokens.append(self.batch.step().tolist())
        self.steps += 1
        if self.steps < self.next_end:
            return False
        self._leave()
        return True

    def texts(self) -> list[tuple[int, str]]:
        """(index, text) of every generation that had not ended: its text since the last
        call ("" while a character's bytes are incomplete). A generation that has all its
        tokens ends here with its last text."""
        self._hand_out()
        events = []
        for index, generation in list(self.open.items()):
            text = generation.decoder.push_many(generation.ids)
            generation.ids = []
            if generation.end <= self.steps:
                text += generation.decoder.flush()
                del self.open[index]
            events.append((index, text))
        return events

    @torch.inference_mode()
    def cancel(self, index: int) -> None:
        """End generation `index` now, without a last text."""
        self._hand_out()
        self.open.pop(index, None)
        self._leave()

    def _hand_out(self) -> None:
        """Give each generation its tokens of the steps since the last call: before the
        rows change, and before their text is decoded."""
        if self.tokens:
            for index, ids in zip(self.rows, zip(*self.tokens, strict=True), strict=True):
                self.open[index].ids.extend(ids)
            self.tokens = []

    def _leave(self) -> None:
        """Drop the rows of generations that have all their tokens or were cancelled."""
        keep = [
            i
            for i, index in enumerate(self.rows)
            if index in self.open and self.open[index].end > self.steps
        ]
        if len(keep) < len(self.rows):
            self._hand_out()
            self.batch.keep(keep)
            self.rows = [self.rows[i] for i in keep]
        self.next_end = min((self.open[index].end for index in self.rows), default=0)


Inference = Generator


_ADD = inspect.signature(Streams.add)  # what add_many reads each request as


def _detach(state):
    if isinstance(state, tuple):
        return tuple(t.detach() for t in state)
    return state.detach()


def _to_cpu(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(t.cpu() for t in state)
    return state.cpu()
