"""The running batch of a generator, for continuous batching.

Streams join and leave between steps. A stream reads its prompt alone (one call of the
fused layer, as `decoding.sample` does), then its state is concatenated into the batch;
every step feeds all rows to `decode_step` at once and each row chooses its next token
with its own options and its own noise generator, so a stream gets the same tokens as
`Generator.generate` with the same seed would give it alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from seqtool.decoding import cat_states, choose


@dataclass(eq=False)
class Row:
    """One stream's sampling: options (temperature, top_k, top_p), its noise generator
    and how many tokens it still wants."""

    options: tuple[float, int | None, float | None]
    generator: torch.Generator
    left: int


def _select(state, index: torch.Tensor):
    if isinstance(state, tuple):
        return tuple(t.index_select(1, index) for t in state)
    return state.index_select(1, index)


class Rows:
    """token (rows,) and state (layers, rows, hidden) of the streams in `self.rows`."""

    def __init__(self, model) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.rows: list[Row] = []
        self.token: torch.Tensor | None = None
        self.state = None

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, row: Row, prompt: list[int]) -> int:
        """Read the prompt (ids, at least one), choose the row's first token; the row
        takes part in the next step."""
        logits, state = self.model.encode(torch.tensor([prompt], device=self.device))
        token = self._choose(logits, [row])
        self.token = token if self.token is None else torch.cat([self.token, token])
        self.state = state if self.state is None else cat_states([self.state, state])
        self.rows.append(row)
        return self._taken([row], token)[0]

    def step(self) -> list[int]:
        """Every row's next token, in row order."""
        logits, self.state = self.model.decode_step(self.token, self.state)
        self.token = self._choose(logits, self.rows)
        return self._taken(self.rows, self.token)

    def keep(self, keep: list[int]) -> None:
        """Only the rows at these positions go on."""
        if not keep:
            self.rows, self.token, self.state = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.token, self.state = self.token[index], _select(self.state, index)

    def _choose(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """logits (rows, vocab) -> tokens (rows,): rows with the same options choose
        together; each row's noise comes from its own generator, drawn every step as
        `decoding.sample` draws it."""
        vocab = logits.size(-1)
        noise = torch.stack(
            [torch.rand(vocab, generator=r.generator, device=self.device) for r in rows]
        )
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.options].append(i)
        if len(groups) == 1:
            return choose(logits, *rows[0].options, noise)
        token = torch.empty(len(rows), dtype=torch.long, device=self.device)
        for options, members in groups.items():
            index = torch.tensor(members, device=self.device)
            token[index] = choose(logits[index], *options, noise[index])
        return token

    @staticmethod
    def _taken(rows: list[Row], token: torch.Tensor) -> list[int]:
        ids = token.tolist()
        for row in rows:
            row.left -= 1
        return ids
