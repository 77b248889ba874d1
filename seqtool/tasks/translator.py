"""The translator task: aligned sentence pairs -> an attention encoder-decoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seqtool import decoding, distributed, metrics
from seqtool.config import TokenizerConfig, TrainConfig, TranslatorConfig
from seqtool.data import (
    Pair,
    encode_lines,
    pad,
    parallel_paths,
    random_holdout,
    read_parallel,
    to_device,
    token_batches,
)
from seqtool.errors import DataError
from seqtool.models.translator import TranslatorModel
from seqtool.tokenizer import BOS_ID, EOS_ID, Tokenizer

METRICS = ("bleu", "loss")
DEFAULT_VOCAB = 8000  # per side (JoeyNMT's Multi30k setting); joint: one model of this size
EXAMPLES = 3  # translations shown at each evaluation


class TranslatorTask:
    name = "translator"
    unit = "tokens"  # target tokens

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
        self.model = TranslatorModel(model_config)
        self.epoch, self.order = -1, []
        self.start_epoch(0)  # num_batches needs the batches

    def num_batches(self) -> int:
        return len(self.order)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = token_batches(
            [len(s) for s in self.train_src],
            [len(t) + 1 for t in self.train_tgt],
            self.config.batch_size,
            self.config.batch_tokens,
            self.config.seed * 7919 + epoch,
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
        hypotheses = translate(
            model, self.valid_src, self.tgt_tokenizer, device, batch_size, beam_size=1
        )
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
        }


def translation_loss(
    model,
    src: list[list[int]],
    tgt: list[list[int]],
    device: torch.device,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the target tokens (eos included, padding masked), and
    how many tokens it sums."""
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
def mean_loss(model, src: list[list[int]], tgt: list[list[int]], batch_size: int, device) -> float:
    """Cross-entropy per target token (eos included) over all pairs, in batches."""
    total, tokens = 0.0, 0
    for start in range(0, len(src), batch_size):
        loss, n = translation_loss(
            model, src[start : start + batch_size], tgt[start : start + batch_size], device
        )
        total, tokens = total + loss.item(), tokens + n
    return total / tokens


def translate(
    model,
    sources: list[list[int]],
    tokenizer: Tokenizer,
    device: torch.device,
    batch_size: int = 64,
    beam_size: int = 5,
    n_best: int = 1,
    alpha: float = 1.0,
    max_length_ratio: float = 2.0,
    return_attention: bool = False,
) -> list[list[tuple[str, decoding.Hypothesis]]]:
    """Translate token-id sentences in batches of similar length; returns, in input
    order, the n_best (text, hypothesis) pairs of each sentence, best first."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[Any] = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src, lengths = pad([sources[i] for i in chunk])
        src = src.to(device)
        if beam_size == 1:
            found = [
                [h]
                for h in decoding.greedy(
                    model, src, lengths, max_length_ratio, alpha, return_attention
                )
            ]
        else:
            found = decoding.beam_search(
                model, src, lengths, beam_size, n_best, alpha, max_length_ratio, return_attention
            )
        for i, hypotheses in zip(chunk, found, strict=True):
            out[i] = [(tokenizer.decode(h.tokens), h) for h in hypotheses]
    return out


def prepare(
    train_path: str,
    valid_path: str | None,
    run_dir: Path,
    tokenizer_config: TokenizerConfig,
    model_options: dict[str, Any],
    config: TrainConfig,
    resume: dict[str, Any] | None,
    notify: Callable[[str], None],
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    joint_vocab: bool = False,
    metric: str = "bleu",
) -> TranslatorTask:
    """Read the parallel data, train (or restore) the tokenizers, and build the task."""
    train = read_pairs(train_path, src_lang, tgt_lang, notify)
    if valid_path:
        valid = read_pairs(valid_path, src_lang, tgt_lang, notify)
    else:
        cut = max(1, min(len(train) // 10, 1000))
        train, valid = random_holdout(train, cut, config.seed)
        notify(f"no --valid given: holding out {cut:,} random pairs of {train_path}")
    if not train:
        raise DataError(f"{train_path}: too few sentence pairs to train on")
    if resume is not None:
        metric = resume["task_options"]["metric"]
        model_config = TranslatorConfig.from_dict(resume["model_config"])
        tokenizer_config = TokenizerConfig.from_dict(resume["tokenizer_config"])
        src_tok = Tokenizer.from_checkpoint(resume, "src")
        tgt_tok = Tokenizer.from_checkpoint(resume, "tgt")
    else:
        src_tok, tgt_tok = train_tokenizers(train, tokenizer_config, joint_vocab, notify)
        model_config = TranslatorConfig(
            src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size, **model_options
        )
    notify(
        f"{train_path}: {len(train):,} pairs; vocabulary source {src_tok.vocab_size:,}, "
        f"target {tgt_tok.vocab_size:,}{' (joint)' if src_tok.proto == tgt_tok.proto else ''}"
    )
    torch.manual_seed(config.seed)
    return TranslatorTask(
        model_config, src_tok, tgt_tok, tokenizer_config, train, valid, config, metric, notify
    )


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
) -> tuple[Tokenizer, Tokenizer]:
    """Sentencepiece models for source and target (or one shared by both)."""

    def fit(lines: list[str]) -> Tokenizer:
        tokenizer, warning = Tokenizer.train(
            lines, config.kind, config.vocab_size, default_size=DEFAULT_VOCAB
        )
        if warning:
            notify(warning)
        return tokenizer

    if joint:
        tokenizer = fit([p.src for p in train] + [p.tgt for p in train])
        return tokenizer, tokenizer
    return fit([p.src for p in train]), fit([p.tgt for p in train])


def load_model(ckpt: dict[str, Any]) -> tuple[TranslatorModel, Tokenizer, Tokenizer]:
    model = TranslatorModel(TranslatorConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, Tokenizer.from_checkpoint(ckpt, "src"), Tokenizer.from_checkpoint(ckpt, "tgt")
