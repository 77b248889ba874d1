"""Dynamic int8 quantization of a loaded model, for inference on the CPU
(`seqtool.load(run, quantize="int8")`, `--quantize int8`).

Weights are stored in int8 with one scale per output row; each call quantizes its
input on the fly (dynamic: nothing to calibrate), multiplies in int8 (fbgemm) and
returns fp32. Which layers, and why:

- nn.Linear (output layers, attention, bridge, combine) and the fused nn.LSTM / nn.GRU
  (whole sequences: the classifier, the translator's encoder, a generator's prompt and
  `evaluate`): torch.ao.quantization.quantize_dynamic. torch has no int8 nn.RNN (the
  Elman cell): it stays fp32 for whole sequences.
- The one-step path (RecurrentStep: sampling, greedy and beam search), which never
  calls the fused layer: its products as torch.ops.quantized.linear_dynamic on weights
  prepacked from the fp32 ones, before the conversion drops them. At batch 1 a step
  reads every recurrent weight once, so a quarter of the bytes is most of the gain.
- A product with fewer than MIN_WEIGHTS weights stays fp32 (an attention's scoring
  vector; every layer of a model with hidden size 64): an int8 call costs about 20 us
  of its own (quantizing the input), more than such a product takes in fp32.
- Embeddings stay fp32: a lookup reads one row per token.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from seqtool.config import QUANTIZATIONS
from seqtool.errors import ConfigError
from seqtool.models.recurrent import Affine, RecurrentStep

# measured on one thread: below 2**16 weights int8 loses at any batch; above, it wins
# at batch 5 (a beam) and, from about 2**17, at batch 1
MIN_WEIGHTS = 2**16


@contextlib.contextmanager
def _quiet():
    """Silence torch's notices that torch.ao.quantization and quantized tensors are
    deprecated: the int8 kernels are what we use, and users cannot act on them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel")
        yield


class Int8Affine:
    """x @ W^T + b with W in int8, one scale per output row: x (batch, in) -> (batch, out)."""

    def __init__(self, packed) -> None:
        self.packed = packed  # torch.ops.quantized.linear_prepack's

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor) -> Int8Affine:
        """fp32 weight (out, in) and bias (out,), quantized one scale per row."""
        from torch.ao.quantization import default_per_channel_weight_observer

        observer = default_per_channel_weight_observer()
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        qweight = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8)
        return cls(torch.ops.quantized.linear_prepack(qweight, bias))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range: 7-bit inputs, as torch's own dynamic Linear uses, so that fbgemm's
        # pairwise u8 x s8 sums cannot saturate
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)


def output_rows(layer: nn.Module, rows: torch.Tensor):
    """The product of `layer` (an nn.Linear, or the int8 form `quantize` made of one)
    restricted to its output rows `rows` (S,): x (batch, in) -> (batch, S). An int8
    layer keeps its int8 rows and their scales."""
    if isinstance(layer, nn.Linear):
        return Affine(layer.weight.detach()[rows], layer.bias.detach()[rows])
    # torch cannot index per-row quantized tensors: rebuilt from their parts, which are
    # unpacked once per layer (about 5 ms for an 8,000-row output layer)
    parts = getattr(layer, "unpacked", None)
    if parts is None:
        weight, bias = layer._weight_bias()
        parts = weight.int_repr(), weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
        layer.unpacked = parts = (*parts, bias)
    values, scales, zero_points, bias = parts
    picked = torch._make_per_channel_quantized_tensor(
        values[rows], scales[rows], zero_points[rows], 0
    )
    return Int8Affine(torch.ops.quantized.linear_prepack(picked, bias[rows]))


def available() -> bool:
    """Whether this torch still has the dynamic int8 API: torch announces its removal
    (for 2.10; 2.13 still has it), and then --quantize is refused with one line."""
    try:
        with _quiet():
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch.ops.quantized, "linear_dynamic")


def _size(module: nn.Module) -> int:
    """Weights per product: a Linear's, or a fused layer's per step of one direction."""
    if isinstance(module, nn.Linear):
        return module.weight.numel()
    return module.weight_ih_l0.numel() + module.weight_hh_l0.numel()


def quantize(model: nn.Module, mode: str, device: torch.device | str = "cpu") -> nn.Module:
    """`model` (as restored: in eval mode, on the CPU) converted in place for `mode`, and
    moved to `device`: "none" converts nothing, "int8" the layers listed above, and
    runs on the CPU only. Returns the model."""
    if mode not in QUANTIZATIONS:
        raise ConfigError(f"quantize {mode!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if mode == "none":
        return model.to(device)
    if torch.device(device).type != "cpu":
        raise ConfigError(
            f"--quantize {mode} runs on the CPU only (the device is {device}); add --device cpu"
        )
    if not available():
        raise ConfigError(
            f"--quantize {mode} needs torch.ao.quantization's dynamic int8, which torch "
            f"{torch.__version__} no longer has; use torch 2.13 or older, or drop --quantize"
        )

    def affine(weight: torch.Tensor, bias: torch.Tensor):
        return (
            Int8Affine.of(weight, bias) if weight.numel() >= MIN_WEIGHTS else Affine(weight, bias)
        )

    # a model that decodes token by token steps its unidirectional fused layers
    stepped = hasattr(model, "decode_step")
    with _quiet():
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        steps = {
            name: RecurrentStep(m, affine)
            for name, m in model.named_modules()
            if stepped and isinstance(m, nn.RNNBase) and not m.bidirectional
        }
        chosen = {
            name: per_channel_dynamic_qconfig
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear | nn.LSTM | nn.GRU) and _size(m) >= MIN_WEIGHTS
        }
        quantize_dynamic(model, chosen, inplace=True)
    for name, step in steps.items():
        model.get_submodule(name).step_path = step
    return model
