"""Attention over the encoder's outputs, with a padding mask.

Every attention computes the keys once per source sentence (`project`), then scores any
number of queries against them: all target positions at once in training, one
position per step in decoding.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Base class: score, mask the padding, softmax, weighted sum of the values."""

    def project(self, values: torch.Tensor) -> torch.Tensor:
        """values (batch, src_len, enc_size) -> keys (batch, src_len, key_size)."""
        raise NotImplementedError

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query (batch, tgt_len, hidden), keys -> scores (batch, tgt_len, src_len)."""
        raise NotImplementedError

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (batch, tgt_len, hidden), keys from `project`, values (batch, src_len,
        enc_size), mask (batch, src_len) True at real tokens -> context (batch, tgt_len,
        enc_size), weights (batch, tgt_len, src_len) summing to 1 over the real tokens."""
        scores = self.score(query, keys).float()
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return torch.bmm(weights.to(values.dtype), values), weights


class BahdanauAttention(Attention):
    """Additive: v^T tanh(W_q q + W_k h_s) (Bahdanau et al., 2015)."""

    def __init__(self, query_size: int, enc_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(enc_size, attention_size, bias=False)
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def project(self, values: torch.Tensor) -> torch.Tensor:
        return self.key_layer(values)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Scores up to a constant per query, which the softmax over the source drops:
        v^T tanh(x) = 2 v^T sigmoid(2x) - sum(v), and torch's CPU tanh takes 2.7x as long
        as its sigmoid over these (batch, tgt_len, src_len, att) sums."""
        # (batch, tgt_len, 1, att) + (batch, 1, src_len, att); in place: autograd keeps
        # only sigmoid's output
        summed = self.query_layer(query).unsqueeze(2) + keys.unsqueeze(1)
        return 2 * self.energy(summed.mul_(2).sigmoid_()).squeeze(-1)


class LuongAttention(Attention):
    """Multiplicative, Luong's "general" form: q^T W_a h_s (Luong et al., 2015)."""

    def __init__(self, query_size: int, enc_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(enc_size, query_size, bias=False)

    def project(self, values: torch.Tensor) -> torch.Tensor:
        return self.key_layer(values)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


def make_attention(kind: str, query_size: int, enc_size: int) -> Attention | None:
    if kind == "bahdanau":
        return BahdanauAttention(query_size, enc_size, query_size)
    if kind == "luong":
        return LuongAttention(query_size, enc_size)
    return None
