import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtool import data
from seqtool.data import (
    LMStream,
    encode_file,
    holdout_offset,
    parallel_paths,
    read_labeled,
    read_parallel,
    read_text,
    token_batches,
)
from seqtool.errors import DataError, OutputError
from seqtool.tokenizer import Tokenizer

TOKENIZER, _ = Tokenizer.train(["abc def\n", "ghi"], "char")


@settings(max_examples=60, deadline=None)
@given(
    # no "\r": read_text turns CRLF into LF, which is not what this test is about
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r"), max_size=300),
    st.integers(min_value=4, max_value=16),
)
def test_blocks_join_to_the_whole_text(tmp_path_factory, text, block):
    path = tmp_path_factory.mktemp("d") / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    original = data.BLOCK_BYTES
    data.BLOCK_BYTES = block  # force many blocks, cut mid-line and mid-character
    try:
        assert "".join(read_text(path)) == text
    finally:
        data.BLOCK_BYTES = original


def test_bad_utf8_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff here\n")
    with pytest.raises(DataError) as err:
        list(read_text(path))
    assert str(err.value) == (
        f"{path}:3: not valid UTF-8 (byte 0xff at column 5); "
        "convert the file to UTF-8, e.g. with iconv -t utf-8"
    )


def test_holdout_offset_never_splits_a_character(tmp_path):
    path = tmp_path / "t.txt"
    text = "é" * 50
    path.write_text(text, encoding="utf-8")
    cut = holdout_offset(path)
    raw = path.read_bytes()
    head, tail = raw[:cut].decode("utf-8"), raw[cut:].decode("utf-8")
    assert head + tail == text and len(tail) == 5


def test_encode_file_caches_and_rebuilds(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc def\n" * 10, encoding="utf-8")
    cache = tmp_path / "cache" / "t.ids"
    first = encode_file(path, TOKENIZER, cache)
    assert first.ids.dtype == np.uint16 and len(first.ids) == 80 and first.num_chars == 80
    assert isinstance(first.ids, np.memmap)
    stamp = cache.stat().st_mtime_ns
    encode_file(path, TOKENIZER, cache)
    assert cache.stat().st_mtime_ns == stamp  # reused
    path.write_text("abc\n", encoding="utf-8")
    again = encode_file(path, TOKENIZER, cache)
    assert len(again.ids) == 4 and TOKENIZER.decode(again.ids) == "abc\n"


def test_a_file_where_the_cache_folder_goes_is_kept_and_named(tmp_path):
    """FileExistsError, a traceback, before."""
    path = tmp_path / "t.txt"
    path.write_text("abc def\n", encoding="utf-8")
    (tmp_path / "data").write_text("keep")
    with pytest.raises(OutputError, match=r"data: a file is in the way; seqtool keeps its token"):
        encode_file(path, TOKENIZER, tmp_path / "data" / "t.ids")
    assert (tmp_path / "data").read_text() == "keep"


def test_lm_stream_carries_rows_across_batches():
    ids = np.arange(101, dtype=np.uint16)
    stream = LMStream(ids, rows=4, seq_len=10)
    assert stream.num_batches == 2  # 25 columns: two whole windows
    x0, y0 = stream.batch(0)
    x1, _ = stream.batch(1)
    assert x0.shape == (4, 10) and x0.dtype.is_floating_point is False
    assert (y0 == x0 + 1).all()
    assert (x1[:, 0] == x0[:, -1] + 1).all()  # row b of batch 1 continues row b of batch 0


@pytest.mark.parametrize(("length", "rows", "seq_len"), [(7, 64, 4), (100, 8, 5), (2, 4, 4)])
def test_eval_stream_and_remainder_cover_every_token(length, rows, seq_len):
    ids = np.arange(length, dtype=np.uint16)
    stream = LMStream.for_eval(ids, rows=rows, seq_len=seq_len)
    scored = sum(stream.batch(i)[1].numel() for i in range(stream.num_batches))
    assert scored + max(len(stream.remainder) - 1, 0) == length - 1


# -- labelled lines (classifier) ---------------------------------------------------------

LABELS = st.text(
    st.characters(exclude_categories=("Cs", "Zs", "Cc", "Zl", "Zp")), min_size=1, max_size=8
)
TEXTS = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40
).filter(lambda t: t.strip())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(LABELS, TEXTS), min_size=1, max_size=20))
def test_labelled_tsv_reader_round_trip(tmp_path_factory, rows):
    rows = [(label, text) for label, text in rows if not label.startswith("__label__")]
    if not rows:
        return
    path = tmp_path_factory.mktemp("tsv") / "data.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    examples, skipped = read_labeled(path)
    assert skipped == 0
    assert [(e.labels, e.text, e.line) for e in examples] == [
        ((label,), text, i + 1) for i, (label, text) in enumerate(rows)
    ]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(LABELS.filter(lambda s: " " not in s), min_size=1, max_size=3),
            TEXTS.filter(lambda t: not t.startswith(" ")),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_fasttext_reader_round_trip(tmp_path_factory, rows):
    rows = [(labels, text) for labels, text in rows if not text.startswith("__label__")]
    if not rows:
        return
    path = tmp_path_factory.mktemp("ft") / "data.txt"
    lines = [
        " ".join(f"__label__{label}" for label in labels) + " " + text for labels, text in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples, _ = read_labeled(path)
    assert [(list(e.labels), e.text) for e in examples] == [(labels, text) for labels, text in rows]


def test_labelled_reader_skips_and_counts_empty_lines(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("a\tone\n\n  \nb\ttwo\n")
    examples, skipped = read_labeled(path)
    assert skipped == 2 and [e.line for e in examples] == [1, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("pos\tfine\nno tab here\n", "{path}:2: the line has no label; write it as label<TAB>text"),
        ("pos\tfine\n\tno label\n", "{path}:2: the line has no label; write it as label<TAB>text"),
        ("pos\tfine\nneg\t   \n", "{path}:2: label 'neg' has no text after it"),
        (
            "__label__a fine\nnot labelled\n",
            "{path}:2: the line has no label; start it with __label__X",
        ),
    ],
)
def test_labelled_reader_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.tsv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_labeled(path)
    assert str(err.value) == message.format(path=path)


# -- parallel data (translator) ----------------------------------------------------------


def test_tsv_and_aligned_files_read_the_same_pairs(tmp_path):
    (tmp_path / "d.tsv").write_text("ein Hund\ta dog\n\nzwei\ttwo\n")
    (tmp_path / "d.de").write_text("ein Hund\n\nzwei\n")
    (tmp_path / "d.en").write_text("a dog\n\ntwo\n")
    tsv, skipped_tsv = read_parallel(parallel_paths(str(tmp_path / "d.tsv"), None, None))
    aligned, skipped = read_parallel(parallel_paths(str(tmp_path / "d"), "de", "en"))
    assert [(p.src, p.tgt, p.line) for p in tsv] == [("ein Hund", "a dog", 1), ("zwei", "two", 3)]
    assert [(p.src, p.tgt, p.line) for p in aligned] == [(p.src, p.tgt, p.line) for p in tsv]
    assert skipped_tsv == skipped == 1


@pytest.mark.parametrize("name", ["x**y", "d**", "d[e]"])
def test_a_parallel_data_name_is_no_glob_pattern(tmp_path, name):
    """`**` in the name was a ValueError from glob, a traceback; `[`, `?` matched other
    files' names for the hint."""
    (tmp_path / "d.de").write_text("ein Hund\n")
    (tmp_path / f"{name}.de").write_text("ein Hund\n")
    with pytest.raises(DataError) as error:
        parallel_paths(str(tmp_path / name), None, None)
    assert str(error.value) == (
        f"{tmp_path / name}: no such file; for aligned files add --src-lang and --tgt-lang"
    )
    (tmp_path / f"{name}.de").unlink()
    with pytest.raises(DataError, match=r": no such file$"):
        parallel_paths(str(tmp_path / name), None, None)


def test_an_empty_file_name_is_named_empty():
    """Path("") is the current folder: "Error: .: not a file" before."""
    for read in (data.check_file, lambda name: parallel_paths(name, None, None)):
        with pytest.raises(DataError, match=r"^'': the file name is empty; give a file$"):
            read("")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1),
            st.text(st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1),
        ).filter(lambda p: p[0].strip() and p[1].strip()),
        min_size=1,
        max_size=20,
    )
)
def test_parallel_tsv_reader_round_trip(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("tsv") / "d.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    pairs, skipped = read_parallel([path])
    # the target keeps any later tab: only the first one splits
    assert [(p.src, p.tgt) for p in pairs] == rows
    assert skipped == 0


def test_mismatched_aligned_files_name_both_counts(tmp_path):
    (tmp_path / "d.de").write_text("a\nb\nc\n")
    (tmp_path / "d.en").write_text("a\nb\n")
    with pytest.raises(DataError) as err:
        read_parallel(parallel_paths(str(tmp_path / "d"), "de", "en"))
    assert str(err.value) == (
        f"{tmp_path / 'd.de'} has 3 lines but {tmp_path / 'd.en'} has 2; "
        f"aligned files need one sentence per line in both"
    )


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=200),
    st.integers(1, 32),
    st.one_of(st.none(), st.integers(1, 300)),
    st.integers(0, 5),
)
def test_token_batches_cover_every_pair_once_within_budget(lengths, sentences, tokens, seed):
    src, tgt = [a for a, _ in lengths], [b for _, b in lengths]
    batches = token_batches(src, tgt, sentences, tokens, seed)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= sentences
        width = max(max(src[i], tgt[i]) for i in b)
        assert tokens is None or len(b) == 1 or len(b) * width <= tokens
    assert batches == token_batches(src, tgt, sentences, tokens, seed)
