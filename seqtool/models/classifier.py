"""Text classifier: embedding -> packed (bi)directional RNN -> pooling -> linear head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtool.config import ClassifierConfig
from seqtool.models.recurrent import make_rnn


class AttentionPooling(nn.Module):
    """Additive attention over time: a learned query scores each position.

    outputs (batch, time, features), mask (batch, time) -> pooled (batch, features),
    weights (batch, time) summing to 1 over the unmasked positions.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.proj = nn.Linear(features, features)
        self.query = nn.Linear(features, 1, bias=False)

    def forward(self, outputs: torch.Tensor, mask: torch.Tensor):
        scores = self.query(torch.tanh(self.proj(outputs))).squeeze(-1)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.bmm(weights.unsqueeze(1), outputs).squeeze(1), weights


class ClassifierModel(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=0)
        self.rnn = make_rnn(
            config.cell,
            config.embedding_size,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            bidirectional=config.bidirectional,
        )
        features = config.hidden_size * (2 if config.bidirectional else 1)
        self.attention = AttentionPooling(features) if config.pooling == "attention" else None
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(features, len(config.labels))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """tokens (batch, time), lengths (batch,) -> logits (batch, labels), and the
        attention weights (batch, time) with attention pooling, else None."""
        embedded = self.dropout(self.embedding(tokens))
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_out, state = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=tokens.size(1))
        mask = (
            torch.arange(tokens.size(1), device=tokens.device)[None]
            < lengths.to(tokens.device)[:, None]
        )
        weights = None
        pooling = self.config.pooling
        if pooling == "max":
            pooled = outputs.masked_fill(~mask[..., None], float("-inf")).max(1).values
        elif pooling == "mean":
            pooled = (outputs * mask[..., None]).sum(1) / lengths.to(outputs)[:, None]
        elif pooling == "last":
            h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, batch, hidden)
            dirs = 2 if self.config.bidirectional else 1
            pooled = torch.cat(list(h[-dirs:]), dim=-1)  # last layer: forward end, backward start
        else:
            pooled, weights = self.attention(outputs, mask)
        return self.out(self.dropout(pooled)), weights
