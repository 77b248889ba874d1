"""The translator task: aligned sentence pairs -> an attention encoder-decoder."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from seqtool import checkpoint, decoding, distributed, metrics
from seqtool.config import SearchConfig, TokenizerConfig, TrainConfig, TranslatorConfig
from seqtool.data import (
    Pair,
    encode_lines,
    pad,
    parallel_paths,
    random_holdout,
    read_parallel,
    sub_seed,
    to_device,
    token_batches,
)
from seqtool.device import allocating, map_by_length
from seqtool.ensemble import Ensemble
from seqtool.errors import ConfigError, DataError, warn
from seqtool.loaded import Loaded, keyword_options
from seqtool.models.translator import TranslatorModel
from seqtool.shortlist import Shortlist, restrict
from seqtool.tasks import Notify, TrainRequest, restored, training_data
from seqtool.tokenizer import BOS_ID, EOS_ID, Tokenizer, plan

if TYPE_CHECKING:  # looking inside is imported when used: start-up stays small
    from seqtool.inspect import Neighbour, TranslationInspection

METRICS = ("bleu", "loss")
# per side; joint: one model of this size. On Multi30k (45 minutes, 2 cores) 4,000 pieces
# per side beat JoeyNMT's 8,000 by 1.6 and 1.0 BLEU (seeds 1 and 2): the output layer
# is half as large, so the budget holds more steps, and each piece is seen more often
DEFAULT_VOCAB = 4000
# What --max-time chooses (bench/analysis.md, from bench/sweep.py --task translator on
# 10,000 Multi30k pairs): not the size, since the default 256 ended as well as or better
# than 64, 128 and 512 at 40 s and 5 minutes, but the dropout and the learning rate.
# Under DROPOUT_EPOCHS epochs DROPOUT_SHORT (0.1 beat 0.3 by 2 BLEU at one epoch; at
# nine 0.3 was ahead). Under SHORT_EPOCHS epochs SHORT_LR, when the target is read in
# pieces of PIECE_CHARS characters or more on average: 3e-3 beat the default 1e-3 on
# Multi30k by 7 BLEU at one epoch, 4 at nine and 0.3 at 23, but a character-level
# target lost by it (the reverse task, 5 epochs in 150 s: 86-96% exact match against
# 99.8%), so characters keep the options' rate. From SHORT_EPOCHS on, pieces train in
# batches LONG_BATCH times as large at LONG_LR: on all of Multi30k, 10 minutes at 1e-3
# in each shape, 2 cores, they read 1.19x the tokens and ended 1.6 test BLEU higher
# (37.6 against 36.0); at 45 minutes they led on valid by 0.65 BLEU, not on test2016.
# There the target embedding is also the output layer, LONG_EMBEDDING wide (about the
# parameters the untied output layer held): on all of Multi30k, 10 minutes in the long
# batches, test BLEU 36.9 untied, 38.0 tied at 256 and 38.6 tied at 320.
DROPOUT_EPOCHS = 5.0
DROPOUT_SHORT = 0.1
SHORT_EPOCHS = 20.0
SHORT_LR = 3e-3
LONG_BATCH = 2
LONG_LR = 2e-3
LONG_EMBEDDING = 320
PIECE_CHARS = 2.0
EXAMPLES = 3  # translations shown at each evaluation
SEARCH = SearchConfig()


class TranslatorTask:
    name = "translator"
    unit = "tokens"  # target tokens
    sizing: str | None = None  # what --max-time chose (fit_to_budget), kept in checkpoints

    def __init__(
        self,
        model_config: TranslatorConfig,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        tokenizer_config: TokenizerConfig,
        train: list[Pair],
        valid: list[Pair],
        config: TrainConfig,
        metric: str = "bleu",
        notify: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.model_config, self.config = model_config, config
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.tokenizer_config = tokenizer_config
        self.metric, self.higher_is_better = metric, metric != "loss"
        # BLEU ties at 0 when every target is one word (ids, dates, reversed strings);
        # chrF still tells a better model from a worse one there
        self.tie_break = "chrf" if metric == "bleu" else None
        limit = model_config.max_length
        self.train_src = encode_lines(
            src_tokenizer, [p.src for p in train], limit, notify, "source lines"
        )
        self.train_tgt = encode_lines(
            tgt_tokenizer, [p.tgt for p in train], limit, notify, "target lines"
        )
        self.valid_src = encode_lines(
            src_tokenizer, [p.src for p in valid], limit, notify, "source lines"
        )
        self.valid_tgt = encode_lines(
            tgt_tokenizer, [p.tgt for p in valid], limit, notify, "target lines"
        )
        self.valid = valid
        # characters per target token: about 1 for characters, 3-5 for subword pieces
        tokens = sum(len(t) for t in self.train_tgt)
        self.piece_chars = sum(len(p.tgt) for p in train) / max(1, tokens)
        self.shortlist = Shortlist.count(
            self.train_src, self.train_tgt, model_config.src_vocab_size, model_config.tgt_vocab_size
        )
        self.build(model_config)
        self.epoch, self.order = -1, []
        self.start_epoch(0)  # num_batches needs the batches

    def build(self, model_config: TranslatorConfig) -> None:
        """Make `model_config` the task's model, as the options would build it."""
        self.model_config = model_config
        torch.manual_seed(self.config.seed)
        self.model = TranslatorModel(model_config)

    def fit_to_budget(
        self,
        step_seconds: Callable[[TranslatorConfig], float],
        budget: float,
        given: set[str],
        notify: Notify,
    ) -> bool:
        """Choose the dropout, learning rate, batches and output layer for `budget`
        seconds from the epochs it holds at the speed `step_seconds(config)` measures:
        DROPOUT_SHORT under DROPOUT_EPOCHS; when target tokens are pieces (PIECE_CHARS),
        SHORT_LR under SHORT_EPOCHS and from there batches LONG_BATCH times as large at
        LONG_LR and tied target embeddings LONG_EMBEDDING wide; else the defaults. What
        the user set (--dropout, --lr, --batch-size, --batch-tokens, --tie-embeddings,
        --embedding-size) is kept; the batches change only with the rate. A changed rate
        replaces the task's TrainConfig. True when the model was rebuilt or the batches
        changed."""
        choose_lr, choose_dropout = "lr" not in given, "dropout" not in given
        choose_batch = choose_lr and not given & {"batch_size", "batch_tokens"}
        pieces = self.piece_chars >= PIECE_CHARS
        choose_tie = pieces and "tie_embeddings" not in given
        if not (choose_lr or choose_dropout or choose_tie):
            return False
        seconds = step_seconds(self.model_config)
        epochs = budget / (seconds * self.num_batches())
        config, model_config = self.config, self.model_config
        lr, dropout = config.lr, model_config.dropout
        batches = config.batch_size, config.batch_tokens
        if pieces:
            if choose_lr and epochs < SHORT_EPOCHS:
                lr = SHORT_LR
            elif choose_batch and config.batch_tokens:
                lr = LONG_LR
                batches = config.batch_size * LONG_BATCH, config.batch_tokens * LONG_BATCH
        if choose_dropout and epochs < DROPOUT_EPOCHS:
            dropout = DROPOUT_SHORT
        model_config = dataclasses.replace(model_config, dropout=dropout)
        if choose_tie and epochs >= SHORT_EPOCHS:
            width = model_config.embedding_size if "embedding_size" in given else LONG_EMBEDDING
            model_config = dataclasses.replace(
                model_config, tie_embeddings=True, embedding_size=width
            )
        self.sizing = (
            f"--max-time {budget:.0f}s: about {epochs:.1f} epochs at the {seconds:.3f} s a "
            f"step measured here, target tokens of {self.piece_chars:.1f} characters: lr "
            f"{lr:g}, dropout {dropout:g}, batches of {batches[0]:,} pairs"
            + (f" and {batches[1]:,} tokens" if batches[1] else "")
            + (
                f", tied target embeddings of {model_config.embedding_size}"
                if model_config.tie_embeddings
                else ""
            )
            + " (set --lr, --dropout, --batch-size or --no-tie-embeddings to choose)"
        )
        notify(self.sizing)
        chosen = dataclasses.replace(config, lr=lr, batch_size=batches[0], batch_tokens=batches[1])
        if chosen == config and model_config == self.model_config:
            return False
        self.config = chosen
        self.build(model_config)
        self.start_epoch(self.epoch)  # the batches of the new sizes
        return True

    def num_batches(self) -> int:
        return len(self.order)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = token_batches(
            [len(s) for s in self.train_src],
            [len(t) + 1 for t in self.train_tgt],
            self.config.batch_size,
            self.config.batch_tokens,
            sub_seed(self.config.seed, epoch),
        )

    def train_loss(self, model, index: int, device: torch.device):
        batch = self.order[index]
        mine, factor = distributed.part(batch)  # all of it, in one process
        loss, _ = translation_loss(
            model,
            [self.train_src[i] for i in mine],
            [self.train_tgt[i] for i in mine],
            device,
            self.config.label_smoothing,
        )
        # the mean over the whole batch's target tokens, once gradients are averaged
        tokens = sum(len(self.train_tgt[i]) + 1 for i in batch)
        return loss * (distributed.world() * (factor > 0) / tokens), tokens

    def evaluate(self, model, device: torch.device) -> dict[str, Any]:
        if not self.valid:
            return {}
        batch_size = self.config.batch_size
        loss = mean_loss(model, self.valid_src, self.valid_tgt, batch_size, device)
        greedy = SearchConfig(beam_size=1, batch_size=batch_size)
        hypotheses = translate(model, self.valid_src, self.tgt_tokenizer, device, greedy)
        best = [h[0][0] for h in hypotheses]
        references = [p.tgt for p in self.valid]
        scores = metrics.bleu_chrf(best, references)
        return {
            "loss": loss,
            "perplexity": metrics.perplexity(loss),
            "bleu": scores["bleu"],
            "chrf": scores["chrf"],
            "examples": [
                {"source": p.src, "reference": p.tgt, "translation": h}
                for p, h in zip(self.valid[:EXAMPLES], best[:EXAMPLES], strict=True)
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.start_epoch(state["epoch"])

    def checkpoint_info(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model_config": self.model_config.to_dict(),
            "tokenizer_config": self.tokenizer_config.to_dict(),
            "tokenizers": {"src": self.src_tokenizer.proto, "tgt": self.tgt_tokenizer.proto},
            "task_options": {"metric": self.metric},
            "shortlist": self.shortlist.to_state(),
        }


def translation_loss(
    model,
    src: list[list[int]],
    tgt: list[list[int]],
    device: torch.device,
    label_smoothing: float = 0.0,
    others: Sequence[list[list[int]]] = (),
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the target tokens (eos included, padding masked), and
    how many tokens it sums. others: the source ids the members of an Ensemble after the
    first read (see Ensemble.reading)."""
    if others:
        model = model.reading(others, device)
    src_tokens, src_lengths = pad(src)
    tgt_in, _ = pad([[BOS_ID, *t] for t in tgt])
    tgt_out, _ = pad([[*t, EOS_ID] for t in tgt])
    tgt_out = to_device(tgt_out, device)
    logits, _ = model(to_device(src_tokens, device), src_lengths, to_device(tgt_in, device))
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(),
        tgt_out.flatten(),
        ignore_index=0,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return loss, int((tgt_out != 0).sum())


@torch.inference_mode()
def mean_loss(
    model,
    src: list[list[int]],
    tgt: list[list[int]],
    batch_size: int,
    device,
    others: Sequence[list[list[int]]] = (),
) -> float:
    """Cross-entropy per target token (eos included) over all pairs, in batches."""
    total, tokens = 0.0, 0
    for start in range(0, len(src), batch_size):
        part = slice(start, start + batch_size)
        loss, n = translation_loss(
            model, src[part], tgt[part], device, others=[ids[part] for ids in others]
        )
        total, tokens = total + loss.item(), tokens + n
    return total / tokens


def translate(
    model,
    sources: list[list[int]],
    tokenizer: Tokenizer,
    device: torch.device,
    search: SearchConfig = SEARCH,
    return_attention: bool = False,
    others: Sequence[list[list[int]]] = (),
    shortlist: Shortlist | None = None,
) -> list[list[tuple[str, decoding.Hypothesis]]]:
    """Translate token-id sentences in batches of similar length (on worker threads on
    the CPU, seqtool.device.map_by_length); returns, in input order, the search.n_best
    (text, hypothesis) pairs of each sentence, best first. others: the ids of the same
    sentences the members of an Ensemble after the first read (see Ensemble.reading).
    shortlist: each batch decodes over its shortlist's target pieces only."""
    beam_size, n_best = search.beam_size, search.n_best
    alpha, max_length_ratio = search.length_penalty, search.max_length_ratio

    def decode(chunk: list[int]) -> list[list[decoding.Hypothesis]]:
        src, lengths = pad([sources[i] for i in chunk])
        src = src.to(device)
        reader = (
            model.reading([[ids[i] for i in chunk] for ids in others], device) if others else model
        )
        vocab = None
        if shortlist is not None:
            vocab = shortlist([sources[i] for i in chunk]).to(device)
            reader = restrict(reader, vocab)
        if beam_size == 1:
            found = [
                [h]
                for h in decoding.greedy(
                    reader, src, lengths, max_length_ratio, alpha, return_attention
                )
            ]
        else:
            found = decoding.beam_search(
                reader, src, lengths, beam_size, n_best, alpha, max_length_ratio, return_attention
            )
        if vocab is not None:  # positions in the shortlist -> target ids
            for h in chain.from_iterable(found):
                h.tokens = vocab[h.tokens].tolist()
        return found

    found = map_by_length(decode, sources, search.batch_size, device)
    return [[(tokenizer.decode(h.tokens), h) for h in hypotheses] for hypotheses in found]


def prepare(request: TrainRequest, notify: Notify) -> TranslatorTask:
    """Read the parallel data, train (or restore) the tokenizers, and build the task."""
    config, options = request.config, request.options
    src_lang, tgt_lang = options.get("src_lang"), options.get("tgt_lang")
    data = training_data(request, parallel_paths(request.train, src_lang, tgt_lang))
    train = read_pairs(request.train, src_lang, tgt_lang, notify)
    if request.valid:
        valid = read_pairs(request.valid, src_lang, tgt_lang, notify)
    else:
        cut = max(1, min(len(train) // 10, 1000))
        train, valid = random_holdout(train, cut, config.seed)
        notify(f"no --valid given: holding out {cut:,} random pairs of {request.train}")
    if not train:
        raise DataError(f"{request.train}: too few sentence pairs to train on")
    if request.resume is not None:
        # a checkpoint from before task_options were stored: the options given now
        metric = request.resume.get("task_options", request.options).get("metric", "bleu")
        model_config, tokenizer_config = restored(request, TranslatorConfig, TranslatorModel)
        src_tok = checkpoint.tokenizer(request.resume, "src")
        tgt_tok = checkpoint.tokenizer(request.resume, "tgt")
    else:
        metric = options.get("metric", "bleu")
        joint = options.get("joint_vocab", False)
        src_tok, tgt_tok, tokenizer_config = train_tokenizers(
            train, request.tokenizer, joint, notify
        )
        model_config = TranslatorConfig(
            src_vocab_size=src_tok.vocab_size,
            tgt_vocab_size=tgt_tok.vocab_size,
            **request.model_options,
        )
    notify(
        f"{request.train}: {len(train):,} pairs; vocabulary source {src_tok.vocab_size:,}, "
        f"target {tgt_tok.vocab_size:,}{' (joint)' if src_tok.proto == tgt_tok.proto else ''}"
    )
    torch.manual_seed(config.seed)
    task = TranslatorTask(
        model_config, src_tok, tgt_tok, tokenizer_config, train, valid, config, metric, notify
    )
    task.data = data
    return task


def read_pairs(
    data: str, src_lang: str | None, tgt_lang: str | None, notify: Callable[[str], None]
) -> list[Pair]:
    pairs, skipped = read_parallel(parallel_paths(data, src_lang, tgt_lang))
    if skipped:
        notify(f"{data}: skipped {skipped:,} pairs with an empty side")
    if not pairs:
        raise DataError(f"{data}: the data holds no sentence pairs")
    return pairs


def train_tokenizers(
    train: list[Pair], config: TokenizerConfig, joint: bool, notify: Callable[[str], None]
) -> tuple[Tokenizer, Tokenizer, TokenizerConfig]:
    """Sentencepiece models for source and target (or one shared by both), and the
    config to store: with `--tokenizer auto`, each side's kind is chosen from its text.
    Lines are read as if they began with a space (`lead_space`), so that a sentence's
    first word gets the same pieces as inside a sentence; checkpoints from before keep
    reading them without."""
    chosen = []

    def fit(side: str, lines: list[str]) -> Tokenizer:
        kind, size, why = plan(config.kind, config.vocab_size, lines, DEFAULT_VOCAB)
        if why:
            chosen.append(f"{side} {kind}: {why}")
            notify(f"{side} tokenizer {kind}: {why}")
        tokenizer, warning = Tokenizer.train(lines, kind, config.vocab_size, size, lead_space=True)
        if warning:
            notify(warning)
        return tokenizer

    if joint:
        tokenizer = fit("joint", [p.src for p in train] + [p.tgt for p in train])
        src, tgt = tokenizer, tokenizer
    else:
        src, tgt = fit("source", [p.src for p in train]), fit("target", [p.tgt for p in train])
    return src, tgt, dataclasses.replace(config, lead_space=True, chosen=tuple(chosen))


@dataclass(frozen=True)
class Translation:
    """One sentence's translation: the text, its length-penalized score (None for an
    empty line), its target pieces, the source pieces, the attention (one row per
    target step, the end-of-sentence step included; columns are source pieces) when
    asked for, and the n best (text, score) pairs, best first."""

    text: str
    score: float | None
    tokens: list[str]
    source_tokens: list[str]
    attention: list[list[float]] | None
    n_best: list[tuple[str, float]]

    @property
    def target_labels(self) -> list[str]:
        """Labels for the attention rows: the pieces, and `</s>` for the step that ended."""
        rows = len(self.attention or [])
        return self.tokens + ["</s>"] * (rows - len(self.tokens))

    def to_dict(self) -> dict[str, Any]:
        """The `translate --json` record (`n_best` only when more than one was asked)."""
        record: dict[str, Any] = {
            "translation": self.text,
            "score": None if self.score is None else round(self.score, 6),
            "tokens": self.tokens,
        }
        if len(self.n_best) > 1:
            record["n_best"] = [{"translation": t, "score": round(s, 6)} for t, s in self.n_best]
        if self.attention is not None:
            record["source_tokens"] = self.source_tokens
            record["attention"] = [[round(w, 4) for w in row] for row in self.attention]
        return record


class Translator(Loaded):
    """A trained translator, or an ensemble of them (`ensemble`): `translate`,
    `evaluate`, `info`."""

    task = "translator"

    def __init__(self, ckpt: dict[str, Any], device: torch.device, quantize: str = "none") -> None:
        super().__init__(ckpt, device, quantize)
        self.model = self._ready(checkpoint.restore_model(ckpt, TranslatorConfig, TranslatorModel))
        self.config = self.model.config
        self.src_tokenizer = checkpoint.tokenizer(ckpt, "src")
        self.tgt_tokenizer = checkpoint.tokenizer(ckpt, "tgt")
        stored = ckpt.get("shortlist")
        self.shortlist = None
        if stored is not None:
            vocab = (self.config.src_vocab_size, self.config.tgt_vocab_size)
            self.shortlist = Shortlist.from_state(stored, *vocab, self.path)
        # an ensemble's members after the first, when they read the source otherwise than
        # the first does: each one's source tokenizer and max_length
        self.other_readers: list[tuple[Tokenizer, int]] = []

    @classmethod
    def ensemble(
        cls, ckpts: list[dict[str, Any]], device: torch.device, quantize: str = "none"
    ) -> Translator:
        """Translators decoding as one (seqtool.ensemble): their log-probabilities are
        averaged at every search step. The first checkpoint gives the tokenizers, config,
        info and the attention shown; the members must share its target vocabulary, and
        each reads the source through its own tokenizer."""
        first, *rest = (cls(ckpt, device, quantize) for ckpt in ckpts)
        for member in rest:
            if member.tgt_tokenizer.proto != first.tgt_tokenizer.proto:
                raise ConfigError(
                    f"{first.path} and {member.path} have different target vocabularies; "
                    "ensembled translators must share one target tokenizer"
                )

        def reads(t: Tokenizer) -> tuple[bytes, bool]:
            return t.proto, t.lead_space

        if any(reads(m.src_tokenizer) != reads(first.src_tokenizer) for m in rest):
            first.other_readers = [(m.src_tokenizer, m.config.max_length) for m in rest]
        first.model = Ensemble([first.model, *(m.model for m in rest)])
        first.info = {**first.info, "ensemble": [m.path for m in (first, *rest)]}
        return first

    def _other_sources(self, texts: list[str]) -> list[list[list[int]]]:
        """The own source ids of `texts` of each member after the first (other_readers)."""
        return [
            encode_lines(tokenizer, texts, limit, warn, "source lines")
            for tokenizer, limit in self.other_readers
        ]

    def _shortlist(self, wanted: bool) -> Shortlist | None:
        """The vocabulary shortlist to decode with, when `wanted`."""
        if not wanted:
            return None
        if self.shortlist is None:
            raise ConfigError(
                f"{self.path} has no vocabulary shortlist (it was trained by an older "
                "seqtool): translate without --shortlist"
            )
        return self.shortlist

    def _one_model(self, what: str) -> None:
        if isinstance(self.model, Ensemble):
            raise ConfigError(f"{what} looks inside one model, not an ensemble: load one run")

    def translate(
        self,
        text: str | list[str],
        *,
        beam_size: int = SEARCH.beam_size,
        n_best: int = SEARCH.n_best,
        length_penalty: float = SEARCH.length_penalty,
        max_length_ratio: float = SEARCH.max_length_ratio,
        batch_size: int = SEARCH.batch_size,
        attention: bool = False,
        shortlist: bool = False,
    ) -> Translation | list[Translation]:
        """Translate a sentence, or each sentence of a list (batched by length).

        beam_size 1 is greedy search; scores are log-probabilities over the GNMT length
        penalty ((5 + length) / 6) ** length_penalty; at most max_length_ratio x source
        pieces + 5 target pieces; attention=True returns each sentence's attention.
        shortlist=True decodes each batch over the target pieces its source pieces were
        seen with in training (seqtool.shortlist): faster, the scores normalized over
        those pieces.
        """
        search = SearchConfig(beam_size, n_best, length_penalty, max_length_ratio, batch_size)
        texts = [text] if isinstance(text, str) else list(text)
        if attention and self.config.attention == "none":
            raise ConfigError(
                "this model was trained with --attention none: it has no attention to show"
            )
        ids = encode_lines(self.src_tokenizer, texts, self.config.max_length, warn, "source lines")
        with allocating("--beam-size or --batch-size"):
            found = translate(
                self.model,
                ids,
                self.tgt_tokenizer,
                self.device,
                search,
                return_attention=attention,
                others=self._other_sources(texts),
                shortlist=self._shortlist(shortlist),
            )
        results = [
            self._result(line, source, hypotheses, attention)
            for line, source, hypotheses in zip(texts, ids, found, strict=True)
        ]
        return results[0] if isinstance(text, str) else results

    __call__ = translate  # model(texts, ...), as a pipeline is called

    def _result(self, line: str, source: list[int], found, attention: bool) -> Translation:
        if not line.strip():  # an empty line translates to an empty line
            return Translation("", None, [], [], None, [])
        best = found[0][1]
        weights = None
        if attention and best.attention is not None:
            weights = best.attention[:, : len(source)].tolist()
        return Translation(
            text=found[0][0],
            score=best.score,
            tokens=[self.tgt_tokenizer.piece(i) for i in best.tokens],
            source_tokens=[self.src_tokenizer.piece(i) for i in source],
            attention=weights,
            n_best=[(t, h.score) for t, h in found],
        )

    @keyword_options
    def evaluate(
        self,
        data: str | os.PathLike | Sequence[tuple[str, str]],
        *,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        beam_size: int = SEARCH.beam_size,
        length_penalty: float = SEARCH.length_penalty,
        batch_size: int | None = None,
        shortlist: bool = False,
    ) -> dict[str, Any]:
        """bleu and chrf (sacrebleu, detokenized), exact_match, loss and perplexity on
        parallel data: a TSV file, a path prefix with src_lang / tgt_lang, or (source,
        reference) pairs. shortlist: search as `translate` does (the loss is over the
        whole vocabulary)."""
        batch_size = batch_size or self.train_config.get("batch_size", 64)
        if isinstance(data, str | os.PathLike):
            pairs = read_pairs(str(data), src_lang, tgt_lang, warn)
        else:
            pairs = [Pair(src, tgt, i) for i, (src, tgt) in enumerate(data, 1)]
            if not pairs:
                raise DataError("evaluate: no (source, reference) pairs given")
        limit = self.config.max_length
        src = encode_lines(self.src_tokenizer, [p.src for p in pairs], limit, warn, "source lines")
        tgt = encode_lines(self.tgt_tokenizer, [p.tgt for p in pairs], limit, warn, "target lines")
        others = self._other_sources([p.src for p in pairs])
        search = SearchConfig(beam_size, 1, length_penalty, batch_size=batch_size)
        with allocating("--beam-size or --batch-size"):
            loss = mean_loss(self.model, src, tgt, batch_size, self.device, others)
            found = translate(
                self.model, src, self.tgt_tokenizer, self.device, search, others=others,
                shortlist=self._shortlist(shortlist),
            )  # fmt: skip
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

    @keyword_options
    def inspect(
        self,
        text: str,
        *,
        beam_size: int = SEARCH.beam_size,
        length_penalty: float = SEARCH.length_penalty,
        max_length_ratio: float = SEARCH.max_length_ratio,
    ) -> TranslationInspection:
        """The best translation of `text`, each target piece with its probability and
        the source piece it attends to most. See seqtool.inspect."""
        from seqtool.inspect import inspect_translation

        self._one_model("inspect")
        self._fp32("inspect")
        if not text.strip():
            raise ConfigError("inspect: the text is empty")
        ids = encode_lines(self.src_tokenizer, [text], self.config.max_length, warn, "source lines")
        with torch.inference_mode():
            search = SearchConfig(beam_size, 1, length_penalty, max_length_ratio, 1)
            with allocating("--beam-size"):
                found = translate(self.model, ids, self.tgt_tokenizer, self.device, search)
            return inspect_translation(
                self.model, self.src_tokenizer, self.tgt_tokenizer, ids[0], found[0][0]
            )

    @keyword_options
    def neighbours(self, piece: str, *, top_k: int = 10, side: str = "source") -> list[Neighbour]:
        """The top_k pieces nearest `piece` by cosine similarity of the source or target
        embeddings."""
        from seqtool.inspect import neighbours

        self._one_model("neighbours")
        if side not in ("source", "target"):
            raise ConfigError(f"side {side!r}: choose source or target")
        embedding = self.model.src_embedding if side == "source" else self.model.tgt_embedding
        tokenizer = self.src_tokenizer if side == "source" else self.tgt_tokenizer
        return neighbours(embedding.weight, tokenizer, piece, top_k)


Inference = Translator
