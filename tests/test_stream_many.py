"""Generator.stream_many: generations sampled as one continuously batched set, each
with the text `generate` gives it alone."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from seqtool.config import GeneratorConfig
from seqtool.errors import ConfigError
from seqtool.models.generator import GeneratorModel
from seqtool.tasks.generator import Generator
from seqtool.tokenizer import Tokenizer
from tests.conftest import TEXT


@pytest.fixture(scope="module")
def gen() -> Generator:
    """A generator of random weights (hidden 8) over the characters of TEXT: its
    samples vary from seed to seed, which is all these tests need. Its byte pieces are
    never sampled, as in a trained model: stray bytes are not UTF-8, which text decoded
    as it streams and text decoded whole replace differently."""
    tokenizer, _ = Tokenizer.train(TEXT.splitlines(), "char")
    config = GeneratorConfig(vocab_size=tokenizer.vocab_size, embedding_size=8, hidden_size=8)
    torch.manual_seed(0)
    model = GeneratorModel(config)
    ids = range(tokenizer.vocab_size)
    model.init_output_bias(torch.tensor([-1e4 if tokenizer.is_byte(i) else 0.0 for i in ids]))
    ckpt = {
        "path": "memory",
        "task": "generator",
        "model_config": config.to_dict(),
        "model_state": model.state_dict(),
        "tokenizers": {"text": tokenizer.proto},
    }
    return Generator(ckpt, torch.device("cpu"))


def texts_of(events) -> dict[int, str]:
    texts: dict[int, str] = defaultdict(str)
    for index, text in events:
        texts[index] += text
    return dict(texts)


def test_each_generation_gets_the_text_generate_gives_it(gen):
    prompts = ["the ", "", "a stitch", "the "]
    options = {"length": 60, "temperature": 0.9, "top_k": 5}
    texts = texts_of(gen.stream_many(prompts, seed=3, **options))
    assert [texts[i] for i in range(len(prompts))] == gen.generate(prompts, seed=3, **options)
    for i, prompt in enumerate(prompts):
        assert texts[i] == gen.generate(prompt, seed=3 + i, **options)
    assert len(set(texts.values())) > 1  # the seeds differ, so do the texts


def test_generations_join_mid_way_with_their_own_options_and_leave_at_their_length(gen):
    first = ("the ", {"length": 50, "temperature": 0.8, "seed": 1})
    later = {  # steps taken -> the generations added then
        3: [
            ("to be", {"length": 20, "temperature": 1.2, "top_p": 0.9, "seed": 2}),
            ("", {"length": 1, "seed": 3}),
        ],
        10: [("quick", {"length": 30, "temperature": 0.0, "seed": 4})],
        45: [("a", {"length": 40, "top_k": 3, "seed": 5})],
    }
    streams = gen.stream_many(first[0], **first[1])
    asks, added = [first], [0]  # of each generation: its ask, the steps taken when added
    texts, ended, steps = defaultdict(str), {}, 0
    while streams:
        steps += 1
        for index, text in streams.step():
            texts[index] += text
            if index not in streams:
                ended[index] = steps
        assert len(streams.batch) == len(streams)  # the generations that go on, no more
        for prompt, options in later.get(steps, []):
            assert streams.add(prompt, **options) == len(asks)
            asks.append((prompt, options))
            added.append(steps)
    assert len(asks) == 5 and steps == 45 + 39
    for index, (prompt, options) in enumerate(asks):
        assert texts[index] == gen.generate(prompt, **options), index
        # the first token comes with add, one more with each step: a generation of
        # length 1 ends at the step after it was added
        assert ended[index] == added[index] + max(options["length"] - 1, 1), index


def test_a_cancelled_generation_leaves_and_bad_options_never_join(gen):
    streams = gen.stream_many(["the ", "a"], length=30, seed=6)
    texts: dict[int, str] = defaultdict(str)
    for _ in range(5):
        for index, text in streams.step():
            texts[index] += text
    streams.cancel(0)
    assert 0 not in streams and len(streams) == 1 and len(streams.batch) == 1
    for bad in ({"temperature": -1}, {"top_k": 0}, {"top_p": 1.5}, {"length": 0}):
        with pytest.raises(ConfigError):
            streams.add("x", **bad)
    assert len(streams) == 1 and len(streams.batch) == 1  # none of them joined
    assert streams.add("x", length=3, seed=0) == 2
    for index, text in streams:
        assert index != 0
        texts[index] += text
    assert texts[1] == gen.generate("a", length=30, seed=7)
    assert texts[2] == gen.generate("x", length=3, seed=0)
    assert len(streams) == 0 and len(streams.batch) == 0


def test_generations_added_together_each_get_their_text_and_a_bad_one_only_its_error(gen):
    """add_many joins the generations of one sampling option in one call, mid-way too;
    each gets the text `generate` gives it alone, and one whose values are wrong (a
    seed out of range among them) gets its own error while the rest join."""
    streams = gen.stream_many("the ", length=40, seed=1)
    for _ in range(4):
        streams.step()
    asks = [
        {"prompt": "to be", "length": 25, "temperature": 0.9, "seed": 2},
        {"prompt": "a", "length": 30, "temperature": 0.9, "top_k": 3, "seed": 3},
        {"prompt": "to be", "length": 20, "temperature": 0.9, "seed": 4},
        {"prompt": "x", "temperature": -1},
        {"prompt": "x", "temperature": 0.9, "seed": 2**64},
        {"prompt": "x", "colour": "red"},
        {"prompt": "", "length": 1, "temperature": 0.9, "seed": 5},
    ]
    added = streams.add_many(asks)
    assert added[:3] == [1, 2, 3] and added[6] == 4
    assert isinstance(added[3], ConfigError)
    assert isinstance(added[4], ConfigError) and isinstance(added[5], TypeError)
    assert len(streams.batch) == 4  # the first and three new; the length-1 one is done
    texts = texts_of(streams)
    for index, ask in zip(added, asks, strict=True):
        if isinstance(index, int) and index:
            options = {k: v for k, v in ask.items() if k != "prompt"}
            assert texts[index] == gen.generate(ask["prompt"], **options), ask


def test_no_prompts_no_events_and_options_checked_at_once(gen):
    assert list(gen.stream_many()) == []
    with pytest.raises(ConfigError, match="temperature"):
        gen.stream_many(temperature=-1)


def test_advancing_many_steps_then_taking_the_texts_gives_the_same_text(gen):
    """advance samples without decoding; texts decodes what the steps made, so a caller
    that wants text now and then (the server) gets what step after step gives."""
    options = {"length": 40, "temperature": 1.0}
    stepped = texts_of(gen.stream_many(["the ", "a"], seed=4, **options))
    many = gen.stream_many(["the ", "a"], seed=4, **options)
    events, ended = list(many.texts()), []
    while many:
        for _ in range(7):  # a text every 7 steps, or at once when one ends
            if many.advance():
                ended.append(many.steps)
                break
        events.extend(many.texts())
    assert texts_of(events) == stepped
    assert ended == [39]  # both reach their 40 tokens (the first is chosen as they join)
    assert not many.advance() and many.texts() == []  # nothing left to sample


def test_push_many_is_push_of_each(gen):
    from seqtool.tokenizer import StreamDecoder

    tokenizer = gen.tokenizer
    ids = tokenizer.encode("the quick brown fox é") + sorted(tokenizer.byte_ids)[:3]
    one, many = StreamDecoder(tokenizer), StreamDecoder(tokenizer)
    single = "".join(one.push(i) for i in ids) + one.flush()
    assert many.push_many(ids[:5]) + many.push_many(ids[5:]) + many.flush() == single
