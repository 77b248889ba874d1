"""The recurrent layers every model uses: torch's fused RNN/LSTM/GRU, and a single-step
path for inference.

Calling the fused layer for one time step costs far more than the step's arithmetic
(oneDNN sets up a whole sequence kernel), so token-by-token decoding uses
`RecurrentStep`, which runs the same equations as a few matrix products on weights
packed once. Its state has the fused layer's layout, so the two can hand over.
"""

from __future__ import annotations

import torch
from torch import nn

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h, or (h, c): (layers, batch, hidden)

_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float = 0.0,
    bidirectional: bool = False,
    batch_first: bool = True,
) -> nn.RNNBase:
    """A fused recurrent layer; `rnn` is the Elman network with tanh."""
    return _LAYERS[cell](
        input_size,
        hidden_size,
        num_layers,
        batch_first=batch_first,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


class _Affine:
    """x @ W^T + b for a few rows at a time, with W kept in both layouts: one row is a
    matrix-vector product over W^T, while several rows run fastest as W @ x^T (measured:
    about 2x at batch 4, where the x @ W^T product spends its time packing W)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.weight_t = weight.contiguous(), weight.t().contiguous()
        self.bias, self.bias_col = bias, bias[:, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) == 1:
            return torch.addmm(self.bias, x, self.weight_t)
        return torch.addmm(self.bias_col, self.weight, x.t()).t()


class RecurrentStep:
    """One time step of a unidirectional fused layer, for inference.

    step(x (batch, input_size), state) -> (output (batch, hidden), state)
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        if rnn.bidirectional:
            raise ValueError("RecurrentStep runs unidirectional layers only")
        self.mode = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[type(rnn)]
        self.layers = []
        with torch.no_grad():
            for k in range(rnn.num_layers):
                w_ih = getattr(rnn, f"weight_ih_l{k}").detach()
                w_hh = getattr(rnn, f"weight_hh_l{k}").detach()
                b_ih = getattr(rnn, f"bias_ih_l{k}").detach()
                b_hh = getattr(rnn, f"bias_hh_l{k}").detach()
                if self.mode == "gru":
                    # n needs b_hn inside r * (W_hn h + b_hn), so the products stay apart
                    self.layers.append((_Affine(w_ih, b_ih), _Affine(w_hh, b_hh)))
                else:
                    # one product for [x, h] @ [W_ih; W_hh]^T, with the two biases summed
                    self.layers.append(_Affine(torch.cat([w_ih, w_hh], dim=1), b_ih + b_hh))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.mode == "lstm":
            h0, c0 = state
            hs, cs = [], []
            for k, affine in enumerate(self.layers):
                gates = affine(torch.cat([x, h0[k]], dim=1))
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c0[k] + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)
                hs.append(x)
                cs.append(c)
            return x, (torch.stack(hs), torch.stack(cs))
        hs = []
        for k, layer in enumerate(self.layers):
            h = state[k]
            if self.mode == "gru":
                input_affine, hidden_affine = layer
                i_r, i_z, i_n = input_affine(x).chunk(3, dim=1)
                h_r, h_z, h_n = hidden_affine(h).chunk(3, dim=1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                x = n + z * (h - n)
            else:
                x = torch.tanh(layer(torch.cat([x, h], dim=1)))
            hs.append(x)
        return x, torch.stack(hs)
