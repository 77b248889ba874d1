"""Text classifier: embedding -> packed (bi)directional RNN -> pooling -> linear head;
optionally several of them trained side by side as one ensemble."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtool.config import ClassifierConfig
from seqtool.models.dropout import Dropout, drop_words, dropout
from seqtool.models.recurrent import FUSED, layer_weights, make_rnn


def reverse_index(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """(batch, time): for each row, its positions read backwards within its length, the
    padding after it left in place; gathering by it twice gives the input back."""
    t = torch.arange(time, device=lengths.device)[None]
    n = lengths[:, None]
    return torch.where(t < n, n - 1 - t, t)


def run_padded(rnn: nn.RNNBase, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The fused layer `rnn` (batch_first) over padded `inputs` (batch, time, features),
    each row to its own length, without packing: one fused call per direction and layer
    over the whole batch; the backward direction reads each row reversed within its
    length, so that the padding comes last for both. -> outputs (batch, time, hidden *
    directions), those of the packed layer at every position before a row's length
    (after it, nothing meaningful).

    On a CPU, torch runs a packed batch one time step at a time outside oneDNN's fused
    kernel: a training step of the SST-2 classifier (a bidirectional LSTM of 256 over
    batches of 32) takes 1.9x as long packed in bf16, 2.2x in fp32."""
    batch, time = inputs.shape[:2]
    index = reverse_index(lengths.to(inputs.device), time)[..., None]
    fused, lstm = FUSED[type(rnn)], isinstance(rnn, nn.LSTM)
    x = inputs
    for layer in range(rnn.num_layers):
        outputs = []
        for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
            weights = layer_weights(rnn, layer, suffix)
            source = x.gather(1, index.expand(-1, -1, x.size(-1))) if suffix else x
            h0 = source.new_zeros(1, batch, rnn.hidden_size)
            state = (h0, h0) if lstm else h0
            out = fused(source, state, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
            outputs.append(out.gather(1, index.expand(-1, -1, out.size(-1))) if suffix else out)
        x = torch.cat(outputs, -1)
        if layer < rnn.num_layers - 1 and rnn.dropout:
            x = dropout(x, rnn.dropout, rnn.training)
    return x


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
        self.dropout = Dropout(config.dropout)
        self.out = nn.Linear(features, len(config.labels))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """tokens (batch, time), lengths (batch,) -> logits (batch, labels), and the
        attention weights (batch, time) with attention pooling, else None."""
        embedded = drop_words(
            self.embedding(tokens), tokens, self.config.word_dropout, self.training
        )
        embedded = self.dropout(embedded)
        if self.training and tokens.device.type == "cpu":
            outputs = run_padded(self.rnn, embedded, lengths)
        else:  # inference (the layer as loaded, int8 too) and cuDNN, which packs natively
            packed = pack_padded_sequence(
                embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            outputs = pad_packed_sequence(
                self.rnn(packed)[0], batch_first=True, total_length=tokens.size(1)
            )[0]
        lengths = lengths.to(tokens.device)
        mask = torch.arange(tokens.size(1), device=tokens.device)[None] < lengths[:, None]
        weights = None
        pooling = self.config.pooling
        if pooling == "max":
            pooled = outputs.masked_fill(~mask[..., None], float("-inf")).max(1).values
        elif pooling == "mean":
            pooled = (outputs * mask[..., None]).sum(1) / lengths.to(outputs)[:, None]
        elif pooling == "last":
            # the forward direction's output at the last piece, the backward one's at the first
            hidden = self.config.hidden_size
            end = outputs[torch.arange(len(lengths), device=tokens.device), lengths - 1]
            pooled = torch.cat([end[:, :hidden], outputs[:, 0, hidden:]], dim=-1)
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
