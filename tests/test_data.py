import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtool import data
from seqtool.data import LMStream, encode_file, holdout_offset, read_text
from seqtool.errors import DataError
from seqtool.tokenizer import Tokenizer

TOKENIZER, _ = Tokenizer.train(["abc def\n", "ghi"], "char")


@settings(max_examples=60, deadline=None)
@given(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=300),
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
