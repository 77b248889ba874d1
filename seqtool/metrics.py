"""Metrics computed from summed losses and counts."""

from __future__ import annotations

import math


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats), capped so that a diverged model prints a number."""
    return math.exp(min(loss, 50.0))


def bits_per_char(loss: float, chars_per_token: float) -> float:
    """Mean nats per token -> bits per character of the original text."""
    return loss / math.log(2) / chars_per_token
