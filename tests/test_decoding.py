"""Sampling: the Gumbel-max draw, filtering, and the fixed-buffer step used on CUDA."""

import pytest
import torch

from seqtool import decoding
from seqtool.config import GeneratorConfig
from seqtool.models.generator import GeneratorModel


def tiny_generator(cell="lstm"):
    torch.manual_seed(0)
    config = GeneratorConfig(vocab_size=11, cell=cell, embedding_size=6, hidden_size=8)
    return GeneratorModel(config).eval()


def test_gumbel_draws_follow_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(40_000, -1)
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(logits.shape, generator=generator)
    chosen = decoding.choose(logits, 1.0, None, None, noise)
    frequencies = torch.bincount(chosen, minlength=4).float() / len(chosen)
    assert torch.allclose(frequencies, logits[0].softmax(-1), atol=0.01)
    # temperature sharpens: at 0.5 the first token takes softmax(2 * logits)[0]
    sharp = decoding.choose(logits, 0.5, None, None, noise)
    expected = (2 * logits[0]).softmax(-1)[0].item()
    assert (sharp == 0).float().mean().item() == pytest.approx(expected, abs=0.01)


def test_top_k_and_top_p_keep_only_the_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(5_000, -1)
    noise = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1))
    assert set(decoding.choose(logits, 1.0, 2, None, noise).tolist()) == {0, 1}
    assert set(decoding.choose(logits, 1.0, None, 0.8, noise).tolist()) == {0, 1}
    assert set(decoding.choose(logits, 1.0, None, 0.81, noise).tolist()) == {0, 1, 2}
    assert decoding.choose(logits, 0.0, None, None, noise).unique().tolist() == [0]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sample_equals_a_plain_loop_of_decode_steps(cell):
    """The fixed-buffer step (captured as a CUDA graph on a GPU) computes what a
    hand-written loop computes, from the same seeds: row i draws from seed + i."""
    model = tiny_generator(cell)
    prompt, length, batch = [1, 2, 3], 30, 3
    seeds = decoding.seeds_for(batch, 7)
    got = torch.stack(list(decoding.sample(model, [prompt] * batch, length, 0.9, 5, None, seeds)))
    generators = [torch.Generator().manual_seed(7 + i) for i in range(batch)]
    with torch.inference_mode():
        logits, state = model(torch.tensor([prompt]).expand(batch, -1))
        logits, expected = logits[:, -1], []
        for _ in range(length):
            noise = torch.stack([torch.rand(11, generator=g) for g in generators])
            token = decoding.choose(logits, 0.9, 5, None, noise)
            expected.append(token)
            logits, state = model.decode_step(token, state)
    assert torch.equal(got, torch.stack(expected))
    assert got.shape == (length, batch)


def test_fresh_seeds_are_ones_seed_options_take_back():
    """Without a seed each row gets a fresh one under 2**63 (--seed's and the API's
    range: a reply's seed can be sent back), and torch's global generator is untouched."""
    state = torch.get_rng_state()
    seeds = decoding.seeds_for(200, None)
    assert all(0 <= s < 2**63 for s in seeds) and len(set(seeds)) == 200
    assert torch.equal(torch.get_rng_state(), state)


def test_a_row_samples_the_same_text_alone_or_in_a_batch():
    model = tiny_generator("gru")
    prompts = [[1, 2, 3], [4], [5, 6]]
    batch = torch.stack(list(decoding.sample(model, prompts, 25, 1.0, seeds=[3, 9, 4])))
    for row, (prompt, seed) in enumerate(zip(prompts, [3, 9, 4], strict=True)):
        alone = torch.stack(list(decoding.sample(model, [prompt], 25, 1.0, seeds=[seed])))
        assert torch.equal(batch[:, row], alone[:, 0])


def test_same_seed_same_sample_and_length_zero():
    model = tiny_generator()

    def draw(seed):
        return torch.stack(list(decoding.sample(model, [[1], [1]], 20, 1.0, seeds=[seed, seed])))

    first, again, other = draw(3), draw(3), draw(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(first[:, 0], first[:, 1])  # same prompt, same seed: same text
    assert list(decoding.sample(model, [[1]], 0)) == []


def test_rows_that_join_and_leave_a_running_batch_sample_as_alone():
    """The continuous batch (decoding.Batch): rows of other options join at later steps,
    one leaves early, and each row gets the tokens `sample` gives it alone."""
    model = tiny_generator("lstm")
    asks = [  # prompt, options, seed, the step it joins at, its length
        ([1, 2, 3], (0.9, 5, None), 7, 0, 30),
        ([4], (1.2, None, 0.8), 8, 0, 12),
        ([5, 6], (0.0, None, None), 9, 4, 20),
        ([1, 2, 3], (0.9, 5, None), 10, 9, 15),
    ]
    batch, got = decoding.Batch(model), {}  # ask -> its tokens
    running: list[int] = []  # the ask of each row
    with torch.inference_mode():
        for step in range(40):
            if running:
                for ask, token in zip(running, batch.step().tolist(), strict=True):
                    got[ask].append(token)
            for ask, (prompt, options, seed, start, _) in enumerate(asks):
                if start == step:
                    got[ask] = batch.join([prompt], options, [seed]).tolist()
                    running.append(ask)
            keep = [i for i, ask in enumerate(running) if len(got[ask]) < asks[ask][4]]
            batch.keep(keep)
            running = [running[i] for i in keep]
    assert not running and len(batch) == 0
    for ask, (prompt, options, seed, _, length) in enumerate(asks):
        alone = decoding.sample(model, [prompt], length, *options, seeds=[seed])
        assert got[ask] == torch.cat(list(alone)).tolist(), ask


def test_a_beam_search_whose_scores_are_all_nan_ends_empty():
    """No hypothesis ever ends when every score is nan (weights that overflow): each
    sentence gets n_best empty translations, not an empty list."""
    from seqtool.config import TranslatorConfig
    from seqtool.models.translator import TranslatorModel

    model = TranslatorModel(TranslatorConfig(11, 11, embedding_size=8, hidden_size=8)).eval()
    step = model.decode_step

    def nan_step(*args):
        log_probs, state, weights = step(*args)
        return torch.full_like(log_probs, float("nan")), state, weights

    model.decode_step = nan_step
    src, lengths = torch.tensor([[5, 6, 7], [5, 6, 0]]), torch.tensor([3, 2])
    found = decoding.beam_search(model, src, lengths, beam_size=3, n_best=2)
    assert [[h.tokens for h in sentence] for sentence in found] == [[[], []], [[], []]]
