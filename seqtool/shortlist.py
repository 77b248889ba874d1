"""Vocabulary shortlists for translation (CTranslate2's vocabulary map, Marian's lexical
shortlist): each batch's output layer restricted to the target pieces likely for its
sources, so that a search step multiplies by a part of the output weights (about a
third of Multi30k's) rather than by all of them.

The table is counted from the training pairs when training starts and stored in every
checkpoint (`shortlist`): for each source piece, the `per_source` target pieces seen
most often in the same pairs, leaving out the `frequent` most frequent target pieces,
which every batch gets anyway. A batch's shortlist is the union of its source pieces'
lists, the frequent pieces and the special ids, sorted. The special ids are the smallest
(0-3), so they keep their ids as positions in the shortlist: the searches' end of
sentence test holds unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch

from seqtool.checkpoint import stored_whole
from seqtool.ensemble import Ensemble
from seqtool.errors import CheckpointError
from seqtool.quantize import output_rows
from seqtool.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SPECIALS = (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
# measured on Multi30k de-en, four 45-minute checkpoints, int8, beam 5, test2016
# (README, `--shortlist`): 20 and 100 give a batch of 64 sentences about 1,200 of the
# 8,000 target pieces and cost 0.22 BLEU on average (0.45 at worst); 50 and 300, about
# 2,700 pieces, 0.14 (0.32), at 1.4-1.5x the speed of the whole vocabulary; 100 and
# 300, 0.11 (0.24) at 1.3x
PER_SOURCE, FREQUENT = 50, 300
# co-occurrence counts settle long before a large corpus ends: counting takes about 2.5 s
# per 100,000 pairs, and its memory grows with them
MAX_PAIRS, CHUNK = 200_000, 20_000
_ARRAYS = ("offsets", "targets", "frequent")


def _flat(sentences: Sequence[Sequence[int]]) -> np.ndarray:
    """Id sentences -> all their ids, one int64 array."""
    return np.fromiter(chain.from_iterable(sentences), np.int64)


@dataclass(frozen=True)
class Shortlist:
    """offsets (src_vocab + 1,): source piece s's list is targets[offsets[s]:offsets[s +
    1]]; targets (n,) target ids; frequent (f,) target ids every batch gets."""

    offsets: np.ndarray
    targets: np.ndarray
    frequent: np.ndarray

    @classmethod
    def count(
        cls,
        sources: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]],
        src_vocab: int,
        tgt_vocab: int,
        per_source: int = PER_SOURCE,
        frequent: int = FREQUENT,
    ) -> Shortlist:
        """The table of aligned id sentences: sources[i] translates to targets[i]. At most
        MAX_PAIRS of them are counted, spread evenly over the data."""
        if len(sources) > MAX_PAIRS:
            picked = np.linspace(0, len(sources) - 1, MAX_PAIRS).astype(int)
            sources, targets = [sources[i] for i in picked], [targets[i] for i in picked]
        seen = np.bincount(_flat(targets), minlength=tgt_vocab)
        common = np.argsort(-seen, kind="stable")[:frequent]
        common = common[seen[common] > 0]  # a piece never seen as a target is not common
        always = np.zeros(tgt_vocab, bool)
        always[common] = True
        always[list(SPECIALS)] = True
        # (src * tgt_vocab + tgt, times together), counted a chunk of pairs at a time so
        # that the keys of all pairs never sit in memory at once
        pairs, together = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for start in range(0, len(sources), CHUNK):
            keys = [np.zeros(0, np.int64)]  # each distinct pair of pieces in a sentence pair
            for src, tgt in zip(
                sources[start : start + CHUNK], targets[start : start + CHUNK], strict=True
            ):
                s, t = np.unique(np.asarray(src, np.int64)), np.unique(np.asarray(tgt, np.int64))
                keys.append((s[:, None] * tgt_vocab + t[~always[t]][None]).ravel())
            chunk, times = np.unique(np.concatenate(keys), return_counts=True)
            pairs, index = np.unique(np.concatenate([pairs, chunk]), return_inverse=True)
            together = np.bincount(index, np.concatenate([together, times])).astype(np.int64)
        src, tgt = pairs // tgt_vocab, pairs % tgt_vocab
        # each source piece's targets, most often together first; ties: the more frequent
        order = np.lexsort((-seen[tgt], -together, src))
        src, tgt = src[order], tgt[order]
        rank = np.arange(len(src)) - np.searchsorted(src, src)
        src, tgt = src[rank < per_source], tgt[rank < per_source]
        offsets = np.searchsorted(src, np.arange(src_vocab + 1))
        return cls(offsets, tgt, np.flatnonzero(always))

    def __call__(self, sources: Sequence[Sequence[int]]) -> torch.Tensor:
        """The sorted target ids (S,) a batch of source id sentences may translate to."""
        pieces = np.unique(_flat(sources))
        lists = [self.targets[self.offsets[s] : self.offsets[s + 1]] for s in pieces]
        return torch.from_numpy(np.unique(np.concatenate([self.frequent, *lists])))

    def to_state(self) -> dict[str, torch.Tensor]:
        """What the checkpoint stores: int32 tensors."""
        return {name: torch.from_numpy(getattr(self, name).astype(np.int32)) for name in _ARRAYS}

    @classmethod
    def from_state(cls, state: Any, src_vocab: int, tgt_vocab: int, path: str) -> Shortlist:
        """A stored table, checked against the vocabularies: a damaged or crafted one is
        a one-line CheckpointError naming the file."""
        try:
            if not all(stored_whole(state[name]) for name in _ARRAYS):
                raise ValueError("not stored whole")
            table = cls(**{name: state[name].numpy().astype(np.int64) for name in _ARRAYS})
            ok = (
                table.targets.ndim == table.frequent.ndim == 1
                and table.offsets.shape == (src_vocab + 1,)
                and table.offsets[0] == 0
                and table.offsets[-1] == len(table.targets)
                and bool((np.diff(table.offsets) >= 0).all())
                and all(((a >= 0) & (a < tgt_vocab)).all() for a in (table.targets, table.frequent))
                and set(SPECIALS) <= set(table.frequent.tolist())
            )
        except (TypeError, KeyError, AttributeError, ValueError, RuntimeError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: the vocabulary shortlist is damaged")
        return table


class Restricted:
    """A translator whose output layer covers only `vocab` (S,), sorted target ids: its
    decode_step takes tokens (batch,) and returns log-probabilities (batch, S) as
    positions in `vocab`, normalized over it."""

    def __init__(self, model, vocab: torch.Tensor) -> None:
        self.model, self.vocab = model, vocab
        self.output = output_rows(model.out, vocab)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        return self.model.encode(src, src_lengths)

    def decode_step(self, tokens: torch.Tensor, state, memory):
        return self.model.decode_step(self.vocab[tokens], state, memory, self.output)


def restrict(model, vocab: torch.Tensor):
    """`model` (a TranslatorModel or an Ensemble of them) decoding over `vocab` only."""
    if isinstance(model, Ensemble):
        return Ensemble([Restricted(m, vocab) for m in model.models], model.sources)
    return Restricted(model, vocab)
