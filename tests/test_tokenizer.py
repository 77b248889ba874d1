from hypothesis import given, settings
from hypothesis import strategies as st

from seqtool.tokenizer import StreamDecoder, Tokenizer

TRAIN = ["hello world", "the cat sat on the mat", "  two  spaces\tand a tab"] * 20
CHAR, _ = Tokenizer.train(TRAIN, "char")
UNIGRAM, _ = Tokenizer.train(TRAIN * 5, "unigram", 320)
BPE, _ = Tokenizer.train(TRAIN * 5, "bpe", 320)
LINES, _ = Tokenizer.train(TRAIN * 5, "unigram", 320, lead_space=True)

# any text that can be UTF-8 encoded (no lone surrogates)
TEXTS = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_char_round_trip_is_exact(text):
    assert CHAR.decode(CHAR.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(TEXTS)
def test_subword_round_trips_are_exact(text):
    assert UNIGRAM.decode(UNIGRAM.encode(text)) == text
    assert BPE.decode(BPE.encode(text)) == text
    assert LINES.decode(LINES.encode(text)) == text
    assert LINES.encode_batch([text, "x"])[0] == LINES.encode(text)


def test_lead_space_gives_a_first_word_its_usual_pieces():
    def pieces(tokenizer, text):
        return [tokenizer.piece(i) for i in tokenizer.encode(text)]

    assert pieces(LINES, "the mat") == pieces(LINES, "on the mat")[-len(pieces(LINES, "the mat")) :]
    assert pieces(LINES, "the")[0] == "\u2581t"
    # without it a line's first word is cut differently from the same word after a space
    assert pieces(UNIGRAM, "the")[0] == "t"
    assert "\u2581t" in pieces(UNIGRAM, "on the")


def test_round_trip_of_hard_cases():
    for text in ["\n\n\t  a  \r\n", "\u2581 literal mark \u2581", "日本語 ünïcödé 🙂", " lead", ""]:
        assert CHAR.decode(CHAR.encode(text)) == text
        assert CHAR.encode_batch([text, "x"])[0] == CHAR.encode(text)


def test_char_model_has_one_piece_per_seen_character():
    ids = CHAR.encode("hello")
    assert len(ids) == 5
    assert not any(CHAR.is_byte(i) for i in ids)


def test_unseen_characters_fall_back_to_bytes():
    ids = CHAR.encode("é")
    assert len(ids) == 2 and all(CHAR.is_byte(i) for i in ids)


def test_too_large_vocabulary_shrinks_with_a_warning():
    tokenizer, warning = Tokenizer.train(TRAIN, "unigram", 5000)
    assert warning is not None and warning.startswith("--vocab-size 5000 is too large")
    assert tokenizer.vocab_size < 5000


def test_proto_round_trip():
    again = Tokenizer(CHAR.proto)
    assert again.encode("the cat") == CHAR.encode("the cat")


@settings(max_examples=100, deadline=None)
@given(TEXTS)
def test_stream_decoder_reassembles_text(text):
    decoder = StreamDecoder(CHAR)
    pieces = [decoder.push(i) for i in CHAR.encode(text)]
    assert "".join(pieces) + decoder.flush() == text
    # a character split into byte pieces is never printed half-done
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


def test_too_small_vocabulary_grows_with_a_warning():
    tokenizer, warning = Tokenizer.train(TRAIN, "unigram", 50)
    assert warning is not None and warning.startswith("--vocab-size 50 is too small")
    assert tokenizer.decode(tokenizer.encode("the cat")) == "the cat"


def test_default_subword_vocabulary_fits_the_corpus_silently():
    tokenizer, warning = Tokenizer.train(TRAIN, "unigram")
    assert warning is None and 256 < tokenizer.vocab_size < 16_000


def test_a_checkpoint_gives_back_the_tokenizer_it_was_trained_with():
    ckpt = {"tokenizers": {"text": LINES.proto}, "tokenizer_config": {"lead_space": True}}
    restored = Tokenizer.from_checkpoint(ckpt)
    assert restored.lead_space and restored.encode("the mat") == LINES.encode("the mat")
    older = Tokenizer.from_checkpoint({"tokenizers": {"src": UNIGRAM.proto}}, "src")
    assert not older.lead_space and older.encode("the mat") == UNIGRAM.encode("the mat")


def test_auto_chooses_characters_for_formatted_strings_and_unigram_for_prose():
    import random

    from seqtool.tokenizer import choose_kind

    rng = random.Random(0)

    def iso() -> str:  # ISO dates: no spaces, almost every line its own word
        return f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"

    kind, why = choose_kind([iso() for _ in range(2000)])
    assert kind == "char" and "occur fewer than 3 times" in why
    month = ["May", "June"]
    dates = [
        f"{rng.choice(month)} {rng.randint(1, 28)}, {rng.randint(1990, 1999)}" for _ in range(2000)
    ]
    assert choose_kind(dates) == (
        "char",
        "lines are short (12 characters on average) with 40 kinds of recurring words: "
        "formatted strings",
    )
    words = [
        "the",
        "a",
        "dog",
        "cat",
        "runs",
        "sleeps",
        "on",
        "mat",
        "quickly",
        "in",
        "garden",
        "under",
        "table",
    ]
    prose = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)]
    kind, why = choose_kind(prose)
    assert kind == "unigram" and why.startswith("words recur (100% occur 3 times or more, 13")


def test_auto_reads_short_natural_sentences_in_subwords_wherever_they_sit_in_the_file():
    """Everyday sentences of 3 to 5 words (about 25 characters) drawn from 4,000 words
    (Zipf): short lines, but a vocabulary, not a format. A file ordered by length gives
    the decision of the whole, not of its shortest lines."""
    import random

    from seqtool.tokenizer import choose_kind

    rng = random.Random(1)
    vocabulary = [f"w{chr(97 + i % 26)}{i}" for i in range(4000)]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    lines = [" ".join(rng.choices(vocabulary, weights, k=rng.randint(3, 5))) for _ in range(60_000)]
    kind, why = choose_kind(lines)
    assert kind == "unigram" and "kinds) in lines of 2" in why, why
    by_length = sorted(lines, key=len)
    assert choose_kind(by_length)[0] == "unigram"
    assert choose_kind(by_length[:20_000])[0] == "unigram"  # the shortest alone: still words


def test_unset_vocabulary_size_counts_the_recurring_words():
    from seqtool.tokenizer import plan, subword_size

    lines = ["the cat sat", "the dog sat", "a bird flew"]  # the, sat recur; 5 words once
    chars = len(set("".join(lines)))
    size, why = subword_size(lines, cap=16_000)
    assert size == 2 + chars + 256 + 4
    assert why.startswith(f"up to {size:,} pieces: 2 words seen 2 times or more")
    assert subword_size(lines, cap=100) == (100, subword_size(lines, 100)[1])
    assert subword_size(lines, cap=100)[1].endswith("at most 100")
    # explicit settings win, and char tokenizers take every character
    assert plan("unigram", 500, lines, 8_000) == ("unigram", 500, "")
    assert plan("char", None, lines, 8_000)[:2] == ("char", 8_000)
    kind, size, why = plan("unigram", None, lines, 8_000)
    assert (kind, size) == ("unigram", 2 + chars + 260) and why.startswith(f"up to {size:,} pieces")


def test_a_vocabulary_of_the_chosen_size_trains():
    from seqtool.tokenizer import plan

    lines = [f"the {w} sat on the mat near {w}s" for w in ("cat", "dog", "bird", "fox")] * 50
    kind, size, why = plan("auto", None, lines, 16_000)
    tokenizer, warning = Tokenizer.train(lines, kind, None, size)
    assert kind == "unigram" and warning is None and tokenizer.vocab_size <= size
    assert tokenizer.decode(tokenizer.encode(lines[0])) == lines[0]


def test_a_classifier_vocabulary_counts_words_seen_once():
    from seqtool.tokenizer import subword_size

    lines = ["the cat sat", "the dog sat", "a bird flew"]
    size, why = subword_size(lines, cap=16_000, recur=1)
    assert size == 7 + len(set("".join(lines))) + 260  # the, cat, sat, dog, a, bird, flew
    assert "7 words seen 1 time or more" in why
