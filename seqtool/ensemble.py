"""Ensembles of translators at decoding time: several trained models decode as one,
averaging their log-probabilities at every step of greedy and beam search.

An `Ensemble` has the interface decoding.py knows a model by (`encode`, `decode_step`,
and `select` on the memory and state they return), so the searches run on it unchanged.
Its members share the target vocabulary; each may read the source through its own
tokenizer (see `Ensemble.reading`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seqtool.data import pad, to_device


class Members(tuple):
    """The members' memories, or their decoder states, in member order."""

    def select(self, index: torch.Tensor) -> Members:
        """Rows `index` (n,) of each member's: beams, or the sentences still decoding."""
        return Members(part.select(index) for part in self)


def average(log_probs: list[torch.Tensor]) -> torch.Tensor:
    """The members' log-probabilities, each (..., tgt_vocab) -> the ensemble's.

    Their mean, renormalized: the log of the members' geometric mean distribution (a
    product of experts, as OpenNMT-py ensembles), so a token one member rules out stays
    unlikely, where a mean of probabilities would let another member vouch for it alone.
    log_softmax makes it a distribution again, so that scores and the length penalty
    mean what they mean for one model, and a model ensembled with itself scores as alone.
    """
    return torch.stack(log_probs).mean(0).log_softmax(-1)


class Ensemble:
    """Translators sharing one target vocabulary, decoding as one model.

    The attention weights returned are the first member's. `sources` (see `reading`)
    holds the padded source ids of the members after the first for one batch, when they
    read the source through tokenizers of their own; empty, every member reads the ids
    `encode` is given.
    """

    def __init__(self, models: list, sources: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()):
        self.models, self.sources = list(models), list(sources)

    def reading(self, others: list[list[list[int]]], device: torch.device) -> Ensemble:
        """This ensemble for one batch in which the members after the first read their
        own ids of its sentences: others[j][i] is member j + 1's ids of sentence i,
        counting the first member as 0 (its ids are what `encode` and the forward pass
        are then given)."""
        sources = [pad(ids) for ids in others]
        return Ensemble(self.models, [(to_device(src, device), n) for src, n in sources])

    def _inputs(self, src: torch.Tensor, src_lengths: torch.Tensor) -> list[tuple]:
        if not self.sources:
            return [(src, src_lengths)] * len(self.models)
        return [(src, src_lengths), *self.sources]

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Members, Members]:
        """src (batch, src_len) padded with 0, src_lengths (batch,): the first member's
        source -> each member's memory and first decoder state."""
        encoded = [
            model.encode(s, n)
            for model, (s, n) in zip(self.models, self._inputs(src, src_lengths), strict=True)
        ]
        return Members(m for m, _ in encoded), Members(s for _, s in encoded)

    def decode_step(
        self, tokens: torch.Tensor, state: Members, memory: Members
    ) -> tuple[torch.Tensor, Members, torch.Tensor | None]:
        """tokens (batch,) -> averaged log-probabilities (batch, tgt_vocab), each
        member's next state, the first member's attention (batch, src_len) or None."""
        steps = [
            model.decode_step(tokens, s, m)
            for model, s, m in zip(self.models, state, memory, strict=True)
        ]
        return average([lp for lp, _, _ in steps]), Members(s for _, s, _ in steps), steps[0][2]

    def __call__(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing, as a model's forward: src (batch, src_len), src_lengths
        (batch,), tgt_in (batch, tgt_len) -> averaged log-probabilities (batch, tgt_len,
        tgt_vocab), which serve as logits, and the first member's attention or None."""
        outputs = [
            model(s, n, tgt_in)
            for model, (s, n) in zip(self.models, self._inputs(src, src_lengths), strict=True)
        ]
        return average([logits.float().log_softmax(-1) for logits, _ in outputs]), outputs[0][1]
