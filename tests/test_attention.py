"""Attention: masking and normalization of Bahdanau (additive) and Luong (multiplicative)."""

import pytest
import torch

from seqtool.models.attention import BahdanauAttention, LuongAttention


@pytest.mark.parametrize("attention", [BahdanauAttention(6, 10, 6), LuongAttention(6, 10)])
def test_attention_masks_padding_and_sums_to_one(attention):
    torch.manual_seed(0)
    values = torch.randn(2, 5, 10)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    query = torch.randn(2, 3, 6)
    context, weights = attention(query, attention.project(values), values, mask)
    assert context.shape == (2, 3, 10) and weights.shape == (2, 3, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3))
    assert torch.all(weights[1, :, 2:] == 0)
    # the padded positions' values cannot leak into the context
    changed = values.clone()
    changed[1, 2:] = 100.0
    context2, _ = attention(query, attention.project(changed), changed, mask)
    assert torch.allclose(context[1], context2[1], atol=1e-6)
