"""The recurrent layers every model uses: torch's fused RNN/LSTM/GRU, and a single-step
path for inference.

Calling the fused layer for one time step costs far more than the step's arithmetic
(oneDNN sets up a whole sequence kernel), so token-by-token decoding uses
`RecurrentStep`, which runs the same equations as a few matrix products on weights
packed once. Its state has the fused layer's layout, so the two can hand over.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from seqtool.models.dropout import dropout

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h, or (h, c): (layers, batch, hidden)

_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# the fused kernel behind each layer, called as the layer itself calls it
FUSED = {nn.LSTM: torch._VF.lstm, nn.GRU: torch._VF.gru, nn.RNN: torch._VF.rnn_tanh}


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


def layer_weights(rnn: nn.RNNBase, layer: int, suffix: str = "") -> list[torch.Tensor]:
    """One layer's parameters (`suffix` "_reverse": its backward direction's) in the
    order the fused kernel takes them: weight_ih, weight_hh and the biases if any."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if rnn.bias else 2]
    return [getattr(rnn, f"{name}_l{layer}{suffix}") for name in names]


def run_layers(rnn: nn.RNNBase, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
    """rnn(x, state) for a unidirectional layer: in training on the CPU with dropout
    between its layers, one fused call per layer with seqtool's dropout between them
    (the fused call's own draws its mask as slowly as torch's CPU dropout: models/
    dropout.py); otherwise the layer itself. x (time, batch, features) or (batch, time,
    features) as the layer reads it -> outputs, final state (layers, batch, hidden)."""
    if not (rnn.training and rnn.dropout and rnn.num_layers > 1 and x.device.type == "cpu"):
        return rnn(x, state)
    lstm, batch = isinstance(rnn, nn.LSTM), x.size(0 if rnn.batch_first else 1)
    if state is None:
        zeros = x.new_zeros(rnn.num_layers, batch, rnn.hidden_size)
        state = (zeros, zeros) if lstm else zeros
    rnn.check_forward_args(x, state, None)  # the fused kernel itself trusts the shapes
    finals = []
    for layer in range(rnn.num_layers):
        if layer:
            x = dropout(x, rnn.dropout, True)
        start = state[0][layer : layer + 1], state[1][layer : layer + 1]
        hx = start if lstm else state[layer : layer + 1]
        weights = layer_weights(rnn, layer)
        x, *final = FUSED[type(rnn)](x, hx, weights, rnn.bias, 1, 0.0, True, False, rnn.batch_first)
        finals.append(final)
    if lstm:
        return x, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
    return x, torch.cat([h for (h,) in finals])


class Affine:
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

    affine(weight (out, in), bias (out,)) makes each product: `Affine` in fp32, or
    another kind with the same call (seqtool.quantize packs them in int8).
    """

    def __init__(self, rnn: nn.RNNBase, affine: Callable = Affine) -> None:
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
                    self.layers.append((affine(w_ih, b_ih), affine(w_hh, b_hh)))
                else:
                    # one product for [x, h] @ [W_ih; W_hh]^T, with the two biases summed
                    weight, bias = torch.cat([w_ih, w_hh], dim=1), b_ih + b_hh
                    if self.mode == "lstm":  # gates i, f, g, o -> i, f, o, g: one sigmoid
                        order = torch.arange(4 * rnn.hidden_size).view(4, -1)[[0, 1, 3, 2]]
                        weight, bias = weight[order.flatten()], bias[order.flatten()]
                    self.layers.append(affine(weight, bias))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.mode == "lstm":
            h0, c0 = state
            hs, cs = [], []
            for k, affine in enumerate(self.layers):
                gates = affine(torch.cat([x, h0[k]], dim=1))
                split = 3 * gates.size(1) // 4
                i, f, o = gates[:, :split].sigmoid().chunk(3, dim=1)
                c = torch.addcmul(f * c0[k], i, gates[:, split:].tanh())
                x = o * c.tanh()
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


def step_path(rnn: nn.Module) -> RecurrentStep:
    """The one-step path of a unidirectional fused layer, its weights packed now; a layer
    converted for inference by seqtool.quantize no longer holds fp32 weights, and
    carries the path packed before they went (`rnn.step_path`)."""
    return getattr(rnn, "step_path", None) or RecurrentStep(rnn)


# what `trace` keeps per cell type: the gates, the candidate (g of the LSTM, n of the
# GRU) and the states, all after the nonlinearity
TRACE_KINDS = {
    "lstm": ("input", "forget", "candidate", "output", "cell", "hidden"),
    "gru": ("reset", "update", "candidate", "hidden"),
    "rnn": ("hidden",),
}
GATES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"), "rnn": ()}


def cell_type(rnn: nn.RNNBase) -> str:
    return {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[type(rnn)]


@torch.no_grad()
def trace(rnn: nn.RNNBase, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a fused layer one time step at a time from a zero state, from its own weights,
    and keep every gate and state: inputs (time, input_size), one sequence ->
    {kind: (layers, time, dirs * hidden)} for the kinds in TRACE_KINDS.

    The unit axis follows the fused layer's output: forward units, then backward ones.
    Gates at step t are those that made the states at t from the states at t - 1.
    """
    mode = cell_type(rnn)
    dirs = 2 if rnn.bidirectional else 1
    kinds: dict[str, list[torch.Tensor]] = {kind: [] for kind in TRACE_KINDS[mode]}
    x = inputs
    for k in range(rnn.num_layers):
        per_dir = [
            _trace_layer(rnn, mode, f"l{k}" + ("_reverse" if d else ""), x, reverse=d == 1)
            for d in range(dirs)
        ]
        for kind in kinds:
            kinds[kind].append(torch.cat([p[kind] for p in per_dir], dim=1))
        x = kinds["hidden"][-1]
    return {kind: torch.stack(layers) for kind, layers in kinds.items()}


def _trace_layer(
    rnn: nn.RNNBase, mode: str, suffix: str, x: torch.Tensor, reverse: bool
) -> dict[str, torch.Tensor]:
    """One direction of one layer: x (time, input) -> {kind: (time, hidden)}."""
    w_ih, w_hh = getattr(rnn, f"weight_ih_{suffix}"), getattr(rnn, f"weight_hh_{suffix}")
    b_ih, b_hh = getattr(rnn, f"bias_ih_{suffix}"), getattr(rnn, f"bias_hh_{suffix}")
    # the input products for all steps at once: only the recurrent one must wait
    projected = torch.addmm(b_ih, x.flip(0) if reverse else x, w_ih.t())
    h = x.new_zeros(rnn.hidden_size)
    c = x.new_zeros(rnn.hidden_size)
    steps = []
    for p in projected:
        r = torch.addmv(b_hh, w_hh, h)
        if mode == "lstm":
            i, f, g, o = (p + r).chunk(4)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            steps.append((i, f, g, o, c, h))
        elif mode == "gru":
            p_r, p_z, p_n = p.chunk(3)
            h_r, h_z, h_n = r.chunk(3)
            reset, z = (p_r + h_r).sigmoid(), (p_z + h_z).sigmoid()
            n = (p_n + reset * h_n).tanh()
            h = (1 - z) * n + z * h
            steps.append((reset, z, n, h))
        else:
            h = (p + r).tanh()
            steps.append((h,))
    out = {
        kind: torch.stack(values)
        for kind, values in zip(TRACE_KINDS[mode], zip(*steps, strict=True), strict=True)
    }
    return {kind: v.flip(0) for kind, v in out.items()} if reverse else out
