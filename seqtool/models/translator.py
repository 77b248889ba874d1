"""Encoder-decoder translator: packed (bi)directional encoder, a bridge to the decoder
state, and a decoder with attention over the source (Luong et al.'s layout, as in
JoeyNMT: the decoder state is the query, and the attentional vector
tanh(W_c [state; context]) feeds the output layer).

Without input feeding the decoder's states do not depend on attention, so training
runs the fused recurrent layer over the whole target at once and attends from every
position in one product; with input feeding each step needs the last attentional
vector and training loops over target positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtool.config import TranslatorConfig
from seqtool.models.attention import make_attention
from seqtool.models.dropout import Dropout, drop_words
from seqtool.models.recurrent import RecurrentStep, State, make_rnn, step_path


class Memory(NamedTuple):
    """What the decoder attends to: values (batch, src_len, enc_size), keys (batch,
    src_len, key_size) or None without attention, mask (batch, src_len) True at tokens."""

    values: torch.Tensor
    keys: torch.Tensor | None
    mask: torch.Tensor

    def select(self, index: torch.Tensor) -> Memory:
        """Rows `index` (n,) of every tensor: beams, or the sentences still decoding."""
        keys = None if self.keys is None else self.keys.index_select(0, index)
        return Memory(self.values.index_select(0, index), keys, self.mask.index_select(0, index))


class DecoderState(NamedTuple):
    """rnn: h or (h, c), each (layers, batch, hidden); feed: the last attentional vector
    (batch, out_size) with input feeding, else None."""

    rnn: State
    feed: torch.Tensor | None

    def select(self, index: torch.Tensor) -> DecoderState:
        rnn = self.rnn
        rnn = (
            tuple(t.index_select(1, index) for t in rnn)
            if isinstance(rnn, tuple)
            else rnn.index_select(1, index)
        )
        feed = None if self.feed is None else self.feed.index_select(0, index)
        return DecoderState(rnn, feed)


class TranslatorModel(nn.Module):
    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        self.config = c = config
        dirs = 2 if c.bidirectional else 1
        enc_size = c.hidden_size * dirs
        out_size = c.embedding_size if c.tie_embeddings else c.hidden_size
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.embedding_size, padding_idx=0)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, c.embedding_size, padding_idx=0)
        self.encoder = make_rnn(
            c.cell, c.embedding_size, c.hidden_size, c.num_layers, c.dropout, c.bidirectional
        )
        # the bridge: each decoder layer starts from its encoder layer's final states
        self.bridge = nn.Linear(enc_size, c.hidden_size)
        self.bridge_cell = nn.Linear(enc_size, c.hidden_size) if c.cell == "lstm" else None
        feed_size = out_size if c.input_feeding else 0
        self.decoder = make_rnn(
            c.cell, c.embedding_size + feed_size, c.hidden_size, c.num_layers, c.dropout
        )
        self.attention = make_attention(c.attention, c.hidden_size, enc_size)
        context_size = enc_size if self.attention is not None else 0
        self.combine = nn.Linear(c.hidden_size + context_size, out_size)
        self.dropout = Dropout(c.dropout)
        self.out = nn.Linear(out_size, c.tgt_vocab_size)
        if c.tie_embeddings:
            # N(0, 1) rows would make the first logits peaked (a dot product of 256 terms)
            nn.init.normal_(self.tgt_embedding.weight, std=c.embedding_size**-0.5)
            with torch.no_grad():
                self.tgt_embedding.weight[0].zero_()
            self.out.weight = self.tgt_embedding.weight
        self._step: RecurrentStep | None = None

    # -- encoder ----------------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Memory, DecoderState]:
        """src (batch, src_len) padded with 0, src_lengths (batch,) -> the memory to attend
        to and the decoder's first state."""
        c = self.config
        embedded = drop_words(self.src_embedding(src), src, c.word_dropout, self.training)
        embedded = self.dropout(embedded)
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), True, enforce_sorted=False)
        packed_out, final = self.encoder(packed)
        values, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        positions = torch.arange(src.size(1), device=src.device)
        mask = positions[None] < src_lengths.to(src.device)[:, None]
        keys = self.attention.project(values) if self.attention is not None else None

        def bridge(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
            # (layers * dirs, batch, hidden) -> (layers, batch, hidden * dirs) -> (layers,
            # batch, hidden)
            dirs = 2 if c.bidirectional else 1
            h = h.view(c.num_layers, dirs, h.size(1), c.hidden_size)
            return torch.tanh(layer(torch.cat(list(h.unbind(1)), dim=-1)))

        if isinstance(final, tuple):
            state: State = (bridge(self.bridge, final[0]), bridge(self.bridge_cell, final[1]))
        else:
            state = bridge(self.bridge, final)
        feed = None
        if c.input_feeding:
            feed = values.new_zeros(src.size(0), self.combine.out_features)
        return Memory(values, keys, mask), DecoderState(state, feed)

    # -- decoder ----------------------------------------------------------------------

    def _attend(self, hidden: torch.Tensor, memory: Memory):
        """hidden (batch, tgt_len, hidden) -> attentional vectors (batch, tgt_len,
        out_size), attention weights (batch, tgt_len, src_len) or None."""
        if self.attention is None:
            return torch.tanh(self.combine(hidden)), None
        context, weights = self.attention(hidden, memory.keys, memory.values, memory.mask)
        return torch.tanh(self.combine(torch.cat([hidden, context], dim=-1))), weights

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: src (batch, src_len), src_lengths (batch,), tgt_in (batch,
        tgt_len) starting with bos -> logits (batch, tgt_len, tgt_vocab), attention
        weights (batch, tgt_len, src_len) or None."""
        memory, state = self.encode(src, src_lengths)
        embedded = self.tgt_embedding(tgt_in)
        embedded = self.dropout(
            drop_words(embedded, tgt_in, self.config.word_dropout, self.training)
        )
        if not self.config.input_feeding:
            hidden, _ = self.decoder(embedded, state.rnn)
            vectors, weights = self._attend(hidden, memory)
        else:
            rnn, feed, steps = state.rnn, state.feed, []
            for t in range(tgt_in.size(1)):
                x = torch.cat([embedded[:, t], feed], dim=-1).unsqueeze(1)
                hidden, rnn = self.decoder(x, rnn)
                vector, w = self._attend(hidden, memory)
                feed = vector.squeeze(1)
                steps.append((vector, w))
            vectors = torch.cat([v for v, _ in steps], dim=1)
            weights = None if self.attention is None else torch.cat([w for _, w in steps], 1)
        return self.out(self.dropout(vectors)), weights

    def decode_step(
        self, tokens: torch.Tensor, state: DecoderState, memory: Memory, output=None
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step for inference: tokens (rows,) -> log-probabilities (rows,
        tgt_vocab), the next state, attention weights (rows, src_len) or None. The
        memory has one row per sentence and the tokens and state k rows each (a beam
        search's k beams, a sentence's together): the k queries of a sentence attend to
        its memory in one product, as a sequence's positions do in training.
        output: the output layer to use instead of `out`, (rows, out_size) -> (rows,
        S) (a vocabulary shortlist's rows, seqtool.shortlist); the log-probabilities
        are then over its S pieces. The step weights are packed on the first call."""
        if self._step is None:
            self._step = step_path(self.decoder)
        x = self.tgt_embedding(tokens)
        if state.feed is not None:
            x = torch.cat([x, state.feed], dim=-1)
        hidden, rnn = self._step.step(x, state.rnn)
        rows, sentences = hidden.size(0), memory.mask.size(0)
        vector, weights = self._attend(hidden.view(sentences, rows // sentences, -1), memory)
        vector = vector.reshape(rows, -1)
        log_probs = (output or self.out)(vector).float().log_softmax(-1)
        feed = vector if state.feed is not None else None
        return (
            log_probs,
            DecoderState(rnn, feed),
            None if weights is None else weights.reshape(rows, -1),
        )

    def train(self, mode: bool = True):
        self._step = None  # packed weights go stale once training changes them
        return super().train(mode)
