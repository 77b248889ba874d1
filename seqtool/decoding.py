"""Decoding: sampling from language models (temperature, top-k, top-p, greedy)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Keep the top_k most likely tokens and the smallest set whose probability reaches
    top_p; the rest get -inf. logits: (batch, vocab)."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop = (cumulative - sorted_logits.softmax(-1)) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def choose(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """logits (batch, vocab) -> token ids (batch,); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.inference_mode()
def sample(
    model,
    prompt: list[int],
    length: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield `length` token ids per sample, one step at a time: (num_samples,) each.

    The prompt primes the state in one call of the fused layer; each further token
    costs one `decode_step`. All samples advance together as one batch.
    """
    if not prompt:
        raise ValueError("sampling needs a prompt of at least one token")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    tokens = torch.tensor([prompt], device=device).expand(num_samples, -1)
    logits, state = model(tokens)
    logits = logits[:, -1]
    for _ in range(length):
        token = choose(logits, temperature, top_k, top_p, generator)
        yield token
        logits, state = model.decode_step(token, state)
