"""Decoding: sampling from language models (temperature, top-k, top-p, greedy), and
greedy and batched beam search for translators."""

from __future__ import annotations

import math
import secrets
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from seqtool.errors import ConfigError
from seqtool.tokenizer import BOS_ID, EOS_ID


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
    noise: torch.Tensor,
) -> torch.Tensor:
    """logits (batch, vocab), noise uniform in [0, 1) (batch, vocab) -> token ids (batch,);
    temperature 0 is greedy.

    Gumbel-max: argmax(logits / T - log(-log u)) is a draw from softmax(logits / T). The
    randomness comes in as `noise`, so a step calls no random generator and can be
    captured as a CUDA graph.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return (logits - torch.log(-torch.log(noise))).argmax(-1)


def _clone(state):
    return tuple(t.clone() for t in state) if isinstance(state, tuple) else state.clone()


def _copy_into(target, source) -> None:
    if isinstance(target, tuple):
        for t, s in zip(target, source, strict=True):
            t.copy_(s)
    else:
        target.copy_(source)


def _select(state, index: torch.Tensor):
    if isinstance(state, tuple):
        return tuple(t.index_select(1, index) for t in state)
    return state.index_select(1, index)


def cat_states(states: list):
    """Hidden states (layers, batch_i, hidden), or (h, c) pairs of them -> one batch,
    concatenated along the batch."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
    return torch.cat(states, dim=1)


def seeds_for(count: int, seed: int | None) -> list[int]:
    """Row i of a batch draws from its own generator seeded `seed + i`, so that a row's
    text does not depend on the rows sampled beside it; without a seed, fresh ones,
    under 2**63 as --seed and the API take them back (torch.seed() draws 64 bits and
    reseeds torch's global generator)."""
    if seed is None:
        return [secrets.randbits(63) for _ in range(count)]
    if not 0 <= seed < 2**63:  # torch takes seeds under 2**64: seed + i stays there
        raise ConfigError(f"seed {seed} must be in [0, 2**63)")
    return [seed + i for i in range(count)]


Options = tuple[float, int | None, float | None]  # temperature, top_k, top_p


@dataclass(eq=False)
class Row:
    """One sampled sequence: its options and the generator its noise comes from."""

    options: Options
    generator: torch.Generator


class Batch:
    """Sequences sampled together as one batch that rows join and leave between steps:
    token (rows,) and state (layers, rows, hidden), or an (h, c) pair of them, of the
    rows in `self.rows`. The model is used only through `encode` and `decode_step`.

    A row reads its prompt alone (one call of the fused layer) and chooses its first
    token as it joins; a step feeds every row to `decode_step` at once. Each row chooses
    with its own options and noise from its own generator, one draw per token, so a row
    gets the same tokens alone or beside any others, joined at any step. Nothing here
    waits for the device. Run it under torch.inference_mode().

    graph=True, for a batch that stays as it is (`sample`'s): on CUDA, the step of rows
    of one set of options runs on fixed buffers, captured as a CUDA graph at the first
    step after rows joined or left, and replayed. At batch 1 a step is a few dozen small
    kernels, and launching them one by one from Python costs far more than running
    them; replays queue up without waiting for the host. A batch that changes often
    would capture again and again, so it runs eagerly, as every batch does elsewhere.
    """

    def __init__(self, model, graph: bool = False) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.rows: list[Row] = []
        self.token: torch.Tensor | None = None
        self.state = None
        self.vocab = 0
        # rows of the same options choose together: (options, their positions; None: all)
        self.groups: list[tuple[Options, torch.Tensor | None]] = []
        self.graphs = graph and self.device.type == "cuda"
        self.graph = None  # the captured step of the present rows
        self.noise: torch.Tensor | None = None  # the graph's noise buffer

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, prompts: list[list[int]], options: Options, seeds: list[int]) -> torch.Tensor:
        """Read each prompt (ids, at least one; identical prompts once) and choose each
        new row's first token with `options` and noise seeded seeds[i]: (len(prompts),).
        The rows take part in the next step; nothing changes if this raises."""
        if not prompts or not all(prompts):
            raise ValueError("sampling needs a prompt of at least one token per row")
        primed: dict[tuple[int, ...], tuple] = {}
        for prompt in prompts:
            if tuple(prompt) not in primed:
                ids = torch.tensor([prompt], device=self.device)
                primed[tuple(prompt)] = self.model.encode(ids)
        logits = torch.cat([primed[tuple(p)][0] for p in prompts])
        state = cat_states([primed[tuple(p)][1] for p in prompts])
        rows = [Row(options, torch.Generator(device=self.device).manual_seed(s)) for s in seeds]
        token = choose(logits, *options, self._noise(rows, logits.size(-1)))
        if self.rows:
            state = cat_states([self.state, state])
            tokens = torch.cat([self.token, token])
        else:
            tokens = token
        self.token, self.state, self.vocab = tokens, state, logits.size(-1)
        self._changed(self.rows + rows)
        return token

    def step(self) -> torch.Tensor:
        """Every row's next token: (rows,)."""
        noise = self._noise(self.rows, self.vocab)
        if self.graph is None and self.graphs and len(self.groups) == 1:
            self.graph = self._capture(noise)
        if self.graph is None:
            self.token, self.state = self._advance(self.token, self.state, noise)
            return self.token
        self.noise.copy_(noise)
        self.graph.replay()
        return self.token.clone()  # the buffer changes at the next replay

    def keep(self, keep: list[int]) -> None:
        """Only the rows at these positions go on."""
        if not keep:
            self.token, self.state = None, None
        else:
            index = torch.tensor(keep, device=self.device)
            self.token, self.state = self.token[index], _select(self.state, index)
        self._changed([self.rows[i] for i in keep])

    def _changed(self, rows: list[Row]) -> None:
        self.rows, self.graph = rows, None
        members: dict[Options, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            members[row.options].append(i)
        if len(members) == 1:
            self.groups = [(rows[0].options, None)]
        else:
            self.groups = [
                (options, torch.tensor(at, device=self.device)) for options, at in members.items()
            ]

    def _noise(self, rows: list[Row], vocab: int) -> torch.Tensor:
        """Uniforms in [0, 1), each row's from its own generator: (len(rows), vocab)."""
        if len(rows) == 1:  # the same draws as below, one call fewer per step
            return torch.rand(1, vocab, generator=rows[0].generator, device=self.device)
        return torch.stack(
            [torch.rand(vocab, generator=r.generator, device=self.device) for r in rows]
        )

    def _advance(self, token: torch.Tensor, state, noise: torch.Tensor):
        """The step itself: (token, state) -> the next (token, state)."""
        logits, state = self.model.decode_step(token, state)
        if len(self.groups) == 1:
            return choose(logits, *self.groups[0][0], noise), state
        chosen = torch.empty_like(token)
        for options, at in self.groups:
            chosen[at] = choose(logits[at], *options, noise[at])
        return chosen, state

    def _replayed(self) -> None:
        """The captured step: from the buffers into the buffers."""
        token, state = self._advance(self.token, self.state, self.noise)
        self.token.copy_(token)
        _copy_into(self.state, state)

    def _capture(self, noise: torch.Tensor):
        """The step as a CUDA graph over fresh buffers, or None when this torch or this
        GPU cannot capture it (then every step runs eagerly)."""
        # buffers of its own: the tokens already returned must not change under a replay
        self.token, self.state, self.noise = self.token.clone(), _clone(self.state), noise.clone()
        start = (self.token.clone(), _clone(self.state))
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up kernels and the allocator first
                for _ in range(3):
                    self._replayed()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._replayed()
        except RuntimeError as err:
            warnings.warn(f"sampling without a CUDA graph: {err}", stacklevel=2)
            graph, self.graphs = None, False
        self.token.copy_(start[0])  # the warm-up stepped the buffers: start over
        _copy_into(self.state, start[1])
        return graph


@torch.inference_mode()
def sample(
    model,
    prompts: list[list[int]],
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seeds: list[int] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield `length` token ids per prompt, one step at a time: (len(prompts),) each.

    A fixed `Batch` of one row per prompt: row i draws its noise from a generator
    seeded `seeds[i]`, so it gets the same text in any batch. Nothing here waits for
    the device: a caller that prints each token as it comes does.
    """
    if length < 1:
        return
    batch = Batch(model, graph=True)
    seeds = seeds if seeds is not None else seeds_for(len(prompts), None)
    yield batch.join(prompts, (temperature, top_k, top_p), seeds)
    for _ in range(length - 1):
        yield batch.step()


@dataclass
class Hypothesis:
    """A finished translation: target ids without bos/eos, the length-penalized score,
    the summed log-probability, and the attention (steps, src_len) when asked for. Steps
    count the eos step too; a hypothesis cut at the maximum length has none."""

    tokens: list[int]
    score: float
    log_prob: float
    attention: torch.Tensor | None = None


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6) ** alpha (Wu et al., 2016); alpha 0 scores raw log-prob.
    Past a float's range (an alpha in the hundreds) it is inf, and every score 0."""
    try:
        return ((5 + length) / 6) ** alpha
    except OverflowError:
        return math.inf


def max_lengths(src_lengths: torch.Tensor, ratio: float) -> list[int]:
    """The most target tokens each sentence may get: ratio x source tokens, plus 5."""
    return [math.ceil(ratio * n) + 5 for n in src_lengths.tolist()]


@torch.inference_mode()
def greedy(
    model,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_length_ratio: float = 2.0,
    alpha: float = 0.0,
    return_attention: bool = False,
) -> list[Hypothesis]:
    """The most likely next token at every step, for all sentences of a batch at once;
    a sentence leaves the batch when it ends. src (batch, src_len) -> one Hypothesis each."""
    limits = max_lengths(src_lengths, max_length_ratio)
    memory, state = model.encode(src, src_lengths)
    batch = src.size(0)
    active = list(range(batch))  # sentence of each row still decoding
    tokens = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(batch)]
    log_probs_sum = [0.0] * batch
    attention: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    result: list[Hypothesis | None] = [None] * batch
    step = 0
    while active:
        log_probs, state, weights = model.decode_step(tokens, state, memory)
        best, tokens = log_probs.max(-1)
        keep = []
        for row, (sentence, token, lp) in enumerate(
            zip(active, tokens.tolist(), best.tolist(), strict=True)
        ):
            log_probs_sum[sentence] += lp
            if return_attention and weights is not None:
                attention[sentence].append(weights[row].float().cpu())
            if token != EOS_ID:
                out[sentence].append(token)
            if token == EOS_ID or step + 1 >= limits[sentence]:
                length = step + 1
                result[sentence] = Hypothesis(
                    out[sentence],
                    log_probs_sum[sentence] / length_penalty(length, alpha),
                    log_probs_sum[sentence],
                    torch.stack(attention[sentence]) if attention[sentence] else None,
                )
            else:
                keep.append(row)
        step += 1
        if len(keep) < len(active):
            index = torch.tensor(keep, dtype=torch.long, device=src.device)
            active = [active[i] for i in keep]
            tokens, memory, state = tokens[index], memory.select(index), state.select(index)
    return result  # type: ignore[return-value]


@torch.inference_mode()
def beam_search(
    model,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam_size: int = 5,
    n_best: int = 1,
    alpha: float = 1.0,
    max_length_ratio: float = 2.0,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Batched beam search: every beam of every sentence advances as one tensor per step.

    Each step takes the 2k best continuations over all k beams; those that end (eos)
    among the first k are set aside as finished, and the k best that do not end go on.
    A sentence is done when it has k finished hypotheses or reaches its maximum length
    (then its open beams finish as they are). Scores are log-probabilities divided by
    the GNMT length penalty. Returns the n_best hypotheses per sentence, best first.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError("n_best must be between 1 and the beam size")
    k, device = beam_size, src.device
    limits = max_lengths(src_lengths, max_length_ratio)
    memory, state = model.encode(src, src_lengths)
    batch = src.size(0)
    # the state has a row per beam; the memory stays one row per sentence, which the
    # decoder attends to with all k beams at once (k times less to copy and read)
    state = state.select(torch.arange(batch, device=device).repeat_interleave(k))
    # only the first beam is open at the start, so the k beams do not repeat one another
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    tokens = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    attention = torch.zeros(batch * k, 0, src.size(1), device=device) if return_attention else None
    active = list(range(batch))
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    ranks = torch.arange(2 * k, device=device)
    step = 0
    while active:
        n = len(active)
        log_probs, state, weights = model.decode_step(tokens, state, memory)
        vocab = log_probs.size(-1)
        candidates = (scores.view(-1, 1) + log_probs).view(n, k * vocab)
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=-1)
        beam, token = top_index // vocab, top_index % vocab
        if attention is not None and weights is not None:
            attention = torch.cat([attention, weights.float()[:, None]], dim=1)
        limited = [step + 1 >= limits[s] for s in active]
        at_limit = torch.tensor(limited, device=device)
        ends = ((token == EOS_ID) | at_limit[:, None]) & (ranks[: token.size(1)] < k)
        ends &= top_scores > float("-inf")
        ending = ends.nonzero().tolist()
        # read on the host in one call each, not element by element
        parents, last, sums = (
            (beam.tolist(), token.tolist(), top_scores.tolist()) if ending else 3 * ([],)
        )
        for a, r in ending:
            row = a * k + parents[a][r]
            ids = history[row].tolist()
            if last[a][r] != EOS_ID:
                ids.append(last[a][r])
            log_prob = sums[a][r]
            finished[active[a]].append(
                Hypothesis(
                    ids,
                    log_prob / length_penalty(step + 1, alpha),
                    log_prob,
                    None if attention is None else attention[row].cpu(),
                )
            )
        # the k best candidates that do not end go on
        order = ((token == EOS_ID).long() * 2 * k + ranks[: token.size(1)]).argsort(dim=-1)[:, :k]
        scores = top_scores.gather(1, order)
        parent = (torch.arange(n, device=device)[:, None] * k + beam.gather(1, order)).flatten()
        tokens = token.gather(1, order).flatten()
        history = torch.cat([history[parent], tokens[:, None]], dim=1)
        if attention is not None:
            attention = attention[parent]
        state = state.select(parent)
        step += 1
        done = [limited[a] or len(finished[s]) >= k for a, s in enumerate(active)]
        if any(done):
            keep = [a for a, d in enumerate(done) if not d]
            index = torch.tensor(keep, dtype=torch.long, device=device)
            beams = (index[:, None] * k + torch.arange(k, device=device)).flatten()
            active = [active[a] for a in keep]
            scores, tokens, history = scores[index], tokens[beams], history[beams]
            memory, state = memory.select(index), state.select(beams)
            if attention is not None:
                attention = attention[beams]
    # no hypothesis ends where every score is nan or -inf (weights that overflow): an
    # empty translation, as for an empty line, rather than none
    empty = Hypothesis([], float("-inf"), float("-inf"), None)
    return [sorted(f, key=lambda h: -h.score)[:n_best] or [empty] * n_best for f in finished]
