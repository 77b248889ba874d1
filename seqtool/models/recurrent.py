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


class RecurrentStep:
    """One time step of a unidirectional fused layer, for inference.

    step(x (batch, input_size), state) -> (output (batch, hidden), state)
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        if rnn.bidirectional:
            raise ValueError("RecurrentStep runs unidirectional layers only")
        self.mode = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[type(rnn)]
        self.hidden_size = rnn.hidden_size
        self.layers = []
        with torch.no_grad():
            for k in range(rnn.num_layers):
                w_ih = getattr(rnn, f"weight_ih_l{k}").detach()
                w_hh = getattr(rnn, f"weight_hh_l{k}").detach()
                b_ih = getattr(rnn, f"bias_ih_l{k}").detach()
                b_hh = getattr(rnn, f"bias_hh_l{k}").detach()
                if self.mode == "gru":
                    # r and z may share a bias; n needs b_hh inside r * (W_hn h + b_hn)
                    self.layers.append((w_ih.t().contiguous(), b_ih, w_hh.t().contiguous(), b_hh))
                else:
                    # one product for [x, h] @ [W_ih; W_hh]^T, with the two biases summed
                    w = torch.cat([w_ih, w_hh], dim=1).t().contiguous()
                    self.layers.append((w, b_ih + b_hh))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.mode == "lstm":
            h0, c0 = state
            hs, cs = [], []
            for k, (w, b) in enumerate(self.layers):
                gates = torch.addmm(b, torch.cat([x, h0[k]], dim=1), w)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c0[k] + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)
                hs.append(x)
                cs.append(c)
            return x, (torch.stack(hs), torch.stack(cs))
        hs = []
        for k, params in enumerate(self.layers):
            h = state[k]
            if self.mode == "gru":
                w_ih, b_ih, w_hh, b_hh = params
                gi, gh = torch.addmm(b_ih, x, w_ih), torch.addmm(b_hh, h, w_hh)
                i_r, i_z, i_n = gi.chunk(3, dim=1)
                h_r, h_z, h_n = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                x = n + z * (h - n)
            else:
                w, b = params
                x = torch.tanh(torch.addmm(b, torch.cat([x, h], dim=1), w))
            hs.append(x)
        return x, torch.stack(hs)
