"""Text classifier: embedding -> packed (bi)directional RNN -> pooling -> linear head;
optionally several of them trained side by side as one ensemble."""

from __future__ import annotations

import math

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


class ClassifierEnsemble(nn.Module):
    """`config.members` classifiers trained side by side on the same batches, each from
    its own initial weights and dropout masks, each on its own loss; at prediction their
    probabilities are averaged. On a small data set (SST-2) three members are worth
    about two points of accuracy over one."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(ClassifierModel(config) for _ in range(config.members))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """tokens (batch, time), lengths (batch,) -> in training, each member's logits
        (members, batch, labels); otherwise the logits of the averaged probabilities
        (batch, labels); and the mean attention weights (batch, time) or None."""
        logits, weights = zip(*(m(tokens, lengths) for m in self.members), strict=True)
        stacked = torch.stack(logits)
        attention = None if weights[0] is None else torch.stack(weights).mean(0)
        if self.training:
            return stacked, attention
        if self.config.multi_label:
            return torch.logit(stacked.float().sigmoid().mean(0), eps=1e-7), attention
        # log of the mean probability: logsumexp of the log-probabilities, less log(members)
        mean = stacked.float().log_softmax(-1).logsumexp(0) - math.log(len(self.members))
        return mean, attention


def build_model(config: ClassifierConfig) -> nn.Module:
    """One classifier, or an ensemble of `config.members` (one keeps the plain layout)."""
    return ClassifierModel(config) if config.members == 1 else ClassifierEnsemble(config)
