"""Reading text files and turning them into batches.

Every text a user gives in a file or on stdin is read here, one way: in blocks checked
as UTF-8 on the way (errors name the file, line and column), a leading byte-order mark
dropped (utf-8-sig), CRLF line ends read as LF, lines bounded in length; so a large
corpus never has to fit in memory. Token ids are written to a compact memory-mapped
array that training reads window by window.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from seqtool import files
from seqtool.errors import DataError
from seqtool.tokenizer import UNK_ID, Tokenizer

T = TypeVar("T")
BLOCK_BYTES = 1 << 22
# longest line the line readers hold (classify, translate, labelled and parallel files):
# `classify < /dev/zero` must end in an error, not in memory running out
MAX_LINE_CHARS = 1 << 20
SEGMENT_CHARS = 1 << 16  # unit of work for sentencepiece's encoder threads


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` consecutive items (the last may be shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def check_file(path: str | os.PathLike) -> Path:
    if not os.fspath(path):  # Path("") is the current folder
        raise DataError("'': the file name is empty; give a file")
    path = Path(path)
    try:
        found, is_file = path.exists(), path.is_file()
    except OSError as err:  # a name too long to look up, a loop of links
        raise DataError(f"{path}: {err.strerror or err}") from None
    if not found:
        raise DataError(f"{path}: no such file")
    if not is_file:
        raise DataError(f"{path}: not a file")
    try:
        path.open("rb").close()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    return path


def holdout_offset(path: Path, fraction: float = 0.9) -> int:
    """The byte offset where the last (1 - fraction) of a file starts, on a character
    boundary (never inside a UTF-8 sequence)."""
    size = path.stat().st_size
    offset = int(size * fraction)
    with path.open("rb") as f:
        f.seek(offset)
        tail = f.read(4)
    # skip UTF-8 continuation bytes (0b10xxxxxx)
    skip = next((i for i, b in enumerate(tail) if b & 0xC0 != 0x80), len(tail))
    return offset + skip


def read_text(path: Path, start: int = 0, end: int | None = None) -> Iterator[str]:
    """Yield the text between two byte offsets as blocks that end at a line end (or at a
    character boundary for very long lines). Bad UTF-8 raises DataError with the line."""
    end = path.stat().st_size if end is None else end
    with path.open("rb") as f:
        line_no = 1 + (_count_newlines(f, start) if start else 0)
        f.seek(start)
        remaining, carry, first = end - start, b"", start == 0
        while remaining > 0 or carry:
            block = f.read(min(BLOCK_BYTES, remaining))
            remaining -= len(block)
            data = carry + block
            cut = len(data) if remaining <= 0 else _cut_point(data)
            piece, carry = data[:cut], data[cut:]
            try:
                # a byte-order mark is no text: only the file's first bytes can hold one
                text = piece.decode("utf-8-sig" if first else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(str(path), line_no, err, "the file") from None
            first = False
            line_no += piece.count(b"\n")
            yield text.replace("\r\n", "\n")


def _not_utf8(name: str, line_no: int, err: UnicodeDecodeError, what: str) -> DataError:
    """The error for bytes that are not UTF-8, naming the line and column (err.object is
    what was decoded, from line `line_no` on, without a byte-order mark)."""
    data = err.object
    line = line_no + data.count(b"\n", 0, err.start)
    column = err.start - data.rfind(b"\n", 0, err.start)
    return DataError(
        f"{name}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
        f"convert {what} to UTF-8, e.g. with iconv -t utf-8"
    )


def _count_newlines(f, upto: int) -> int:
    f.seek(0)
    count, left = 0, upto
    while left > 0:
        block = f.read(min(BLOCK_BYTES, left))
        count += block.count(b"\n")
        left -= len(block)
    return count


def _cut_point(data: bytes) -> int:
    cut = data.rfind(b"\n") + 1
    if cut:
        return cut
    cut = len(data)
    while cut > 0 and data[cut - 1] & 0xC0 == 0x80:  # inside a multi-byte character
        cut -= 1
    if cut > 0 and data[cut - 1] >= 0xC0:  # a lead byte whose continuation is still unread
        cut -= 1
    if cut > 0 and data[cut - 1] == 0x0D:  # a CR whose LF may follow: kept as one line end
        cut -= 1
    return cut or len(data)


class TextLines:
    """The lines of a byte range of a file, re-iterable (for tokenizer training)."""

    def __init__(self, path: Path, start: int = 0, end: int | None = None) -> None:
        self.path, self.start, self.end = path, start, end

    def __iter__(self) -> Iterator[str]:
        for block in read_text(self.path, self.start, self.end):
            yield from block.split("\n")


def _segments(text: str) -> list[str]:
    """Cut a block into ~SEGMENT_CHARS pieces at line ends, for parallel encoding."""
    out, start = [], 0
    while start < len(text):
        stop = text.find("\n", start + SEGMENT_CHARS)
        stop = len(text) if stop < 0 else stop + 1
        out.append(text[start:stop])
        start = stop
    return out


@dataclass(frozen=True)
class TokenArray:
    """A tokenized text: ids (memory-mapped, uint16 or int32), its character count, and
    how often each id occurs (counted while encoding, so that nothing has to read all
    the ids again)."""

    ids: np.ndarray
    num_chars: int
    counts: np.ndarray

    @property
    def chars_per_token(self) -> float:
        return self.num_chars / max(len(self.ids), 1)


def digest(paths: Iterable[Path]) -> str:
    """The sha256 of a file's bytes (as sha256sum prints it), or for several files of
    their digests in order: what caches and resumed runs compare, since a file edited in
    place can keep its size and modification time (`cp -p`, `rsync -t`). A plain
    hashing pass reads hundreds of MB/s, far faster than tokenizing."""
    digests = []
    for path in paths:
        sha = hashlib.sha256()  # by blocks: hashlib.file_digest needs Python 3.11
        with path.open("rb") as f:
            while block := f.read(BLOCK_BYTES):
                sha.update(block)
        digests.append(sha.hexdigest())
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


def encode_file(
    path: Path,
    tokenizer: Tokenizer,
    cache: Path,
    start: int = 0,
    end: int | None = None,
    sha256: str | None = None,
) -> TokenArray:
    """Tokenize a byte range of `path` into `cache` (+ `.json` beside it), or reuse the
    cache when the file's contents (`sha256`, the file's digest, computed here when not
    given), the range and the tokenizer are unchanged. Under torchrun the first process
    writes the cache while the others wait, then they map it."""
    from seqtool import distributed

    if not distributed.is_main():
        distributed.barrier()
    try:
        return _encode_file(path, tokenizer, cache, start, end, sha256 or digest([path]))
    finally:
        if distributed.is_main():
            distributed.barrier()


def _encode_file(
    path: Path, tokenizer: Tokenizer, cache: Path, start: int, end: int | None, sha256: str
) -> TokenArray:
    end = path.stat().st_size if end is None else end
    key = {
        "sha256": sha256,
        "range": [start, end],
        "tokenizer": hashlib.sha1(tokenizer.proto).hexdigest(),
    }
    meta_path = cache.with_suffix(".json")
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    meta = read_meta(meta_path)
    # a cache file of another size than its metadata says (cut short, say) is rebuilt
    if meta.get("key") == key and _size(cache) == meta.get("tokens", -1) * np.dtype(dtype).itemsize:
        return TokenArray(_open_ids(cache, dtype), meta["num_chars"], np.array(meta["counts"]))
    files.folder(cache.parent, "token cache")
    num_chars, tokens, counts = 0, 0, np.zeros(tokenizer.vocab_size, dtype=np.int64)
    with files.replacing(cache, "token cache") as out:
        for block in read_text(path, start, end):
            num_chars += len(block)
            for ids in tokenizer.encode_batch(_segments(block)):
                array = np.asarray(ids, dtype=dtype)
                counts += np.bincount(array, minlength=tokenizer.vocab_size)
                tokens += len(array)
                out.write(array.tobytes())
    meta = {"key": key, "tokens": tokens, "num_chars": num_chars, "counts": counts.tolist()}
    files.write(meta_path, json.dumps(meta).encode(), "token cache")
    return TokenArray(_open_ids(cache, dtype), num_chars, counts)


def read_meta(path: Path) -> dict:
    """A cache's metadata; empty when missing or unreadable (the cache is rebuilt)."""
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _open_ids(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class LMStream:
    """Contiguous token streams for truncated BPTT (as char-rnn and Keras `stateful`).

    The ids are laid out as `rows` parallel streams; batch i holds columns
    [i * seq_len, (i + 1) * seq_len) of every stream, so row b of batch i continues row
    b of batch i - 1 and the hidden state can be carried from one batch to the next.
    """

    def __init__(self, ids: np.ndarray, rows: int, seq_len: int, partial: bool = False) -> None:
        self.rows, self.seq_len = rows, seq_len
        self.cols = (len(ids) - 1) // rows
        self.inputs = ids[: rows * self.cols].reshape(rows, self.cols)
        self.targets = ids[1 : rows * self.cols + 1].reshape(rows, self.cols)
        # training uses whole windows only; evaluation also scores the last partial one
        count = self.cols / seq_len
        self.num_batches = math.ceil(count) if partial else int(count)
        # the tokens after the last whole column, shorter than one row (scored on their own)
        self.remainder = ids[rows * self.cols :]

    def batch(self, index: int):
        """-> (inputs, targets), each a LongTensor (rows, <= seq_len)."""
        import torch

        cols = slice(index * self.seq_len, (index + 1) * self.seq_len)
        return (
            torch.from_numpy(self.inputs[:, cols].astype(np.int64)),
            torch.from_numpy(self.targets[:, cols].astype(np.int64)),
        )

    @classmethod
    def for_eval(cls, ids: np.ndarray, rows: int, seq_len: int) -> LMStream:
        """Every token scored once: fewer rows when the text is short."""
        if len(ids) < 2:
            raise DataError("the text to evaluate is shorter than two tokens")
        rows = max(1, min(rows, (len(ids) - 1) // seq_len))
        return cls(ids, rows, seq_len, partial=True)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its line end) for every line of a UTF-8 file."""
    line_no = 0
    rest = ""
    for block in read_text(path):
        lines = (rest + block).split("\n")
        rest = lines.pop()
        for line in lines:
            line_no += 1
            yield line_no, line
        if len(rest) > MAX_LINE_CHARS:
            raise _too_long(str(path), line_no + 1)
    if rest:
        yield line_no + 1, rest


def read_input_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of an INPUT file without their line ends: a regular file (checked now),
    or a pipe or device read once as a stream (`<(zcat test.gz)`, /dev/stdin), as stdin is."""
    path = Path(path)
    if files.is_stream(path):
        return _read_pipe_lines(path)
    return (line for _, line in read_lines(check_file(path)))


def _read_pipe_lines(path: Path) -> Iterator[str]:
    try:
        stream = path.open("rb")  # a pipe's open waits for its writer, as `cat`'s does
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    with stream:
        yield from read_stream_lines(stream, str(path))


def _too_long(name: str, line_no: int) -> DataError:
    return DataError(
        f"{name}:{line_no}: the line is longer than {MAX_LINE_CHARS:,} characters; "
        "break the text into lines"
    )


def read_stream_lines(stream, name: str = "<stdin>") -> Iterator[str]:
    """The lines of a binary stream (stdin) without their line ends, each yielded as soon
    as it arrives (a person typing at a terminal gets an answer per line). Bad UTF-8
    raises DataError with the line, worded as for files."""
    if stream is None:  # started with stdin closed (`<&-`)
        raise DataError(f"{name}: standard input is closed; give INPUT or pipe lines in")
    # at most 4 bytes a character: more bytes than 4 x the limit are too many characters
    limit = 4 * MAX_LINE_CHARS + 1
    for line_no, raw in enumerate(iter(lambda: stream.readline(limit), b""), 1):
        if len(raw) == limit and not raw.endswith(b"\n"):
            raise _too_long(name, line_no)
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(name, line_no, err, "the input") from None
        line = line.removesuffix("\n").removesuffix("\r")
        if len(line) > MAX_LINE_CHARS:
            raise _too_long(name, line_no)
        yield line


FASTTEXT_PREFIX = "__label__"


@dataclass(frozen=True)
class Example:
    """One labelled line: its labels (one, or several for fastText multi-label lines)."""

    labels: tuple[str, ...]
    text: str
    line: int


def read_labeled(path: str | os.PathLike) -> tuple[list[Example], int]:
    """Read a classification file: TSV `label<TAB>text` or fastText `__label__X text`
    (several labels allowed), told apart by the first non-empty line.

    Returns the examples and the number of empty lines skipped. A line without a label
    or without text raises DataError naming the file and line.
    """
    path = check_file(path)
    examples, skipped, fasttext = [], 0, None
    for line_no, line in read_lines(path):
        if not line.strip():
            skipped += 1
            continue
        if fasttext is None:
            fasttext = line.startswith(FASTTEXT_PREFIX)
        labels, text = _split_fasttext(line) if fasttext else _split_tsv(line)
        where = f"{path}:{line_no}"
        if not labels:
            fix = "start it with __label__X" if fasttext else "write it as label<TAB>text"
            raise DataError(f"{where}: the line has no label; {fix}")
        if not text.strip():
            raise DataError(f"{where}: label {labels[0]!r} has no text after it")
        examples.append(Example(labels, text, line_no))
    if not examples:
        raise DataError(f"{path}: the file holds no labelled lines")
    return examples, skipped


def _split_tsv(line: str) -> tuple[tuple[str, ...], str]:
    label, tab, text = line.partition("\t")
    if not tab:
        return (), line
    return ((label.strip(),) if label.strip() else ()), text


def _split_fasttext(line: str) -> tuple[tuple[str, ...], str]:
    labels, words = [], line.split(" ")
    while words and words[0].startswith(FASTTEXT_PREFIX):
        labels.append(words.pop(0)[len(FASTTEXT_PREFIX) :])
    return tuple(label for label in labels if label), " ".join(words)


def encode_lines(
    tokenizer: Tokenizer,
    texts: list[str],
    max_length: int,
    notify: Callable[[str], None],
    what: str = "lines",
) -> list[list[int]]:
    """Token ids per line, cut to max_length (with one warning); an empty line keeps one
    token (unk) so that an encoder has something to read."""
    ids = tokenizer.encode_batch(texts)
    cut = sum(len(s) > max_length for s in ids)
    if cut:
        notify(f"{cut:,} {what} are longer than {max_length} tokens and were cut")
    return [s[:max_length] or [UNK_ID] for s in ids]


def random_holdout(items: list, count: int, seed: int) -> tuple[list, list]:
    """(rest, held out): `count` items drawn at random, seeded (files are often sorted,
    by label say, so the last lines are no fair sample); the rest keeps its order."""
    import torch

    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    held = [items[i] for i in perm[:count]]
    return [items[i] for i in sorted(perm[count:])], held


def sub_seed(seed: int, index: int) -> int:
    """A seed of its own for item `index` (an epoch) of a run seeded `seed`, within what
    torch.manual_seed takes whatever the seed."""
    return (seed * 7919 + index) % 2**63


def length_buckets(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of indices of similar length (little padding), in a random order that
    depends only on `seed`, so that a resumed run sees the same batches."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(lengths), generator=generator).tolist()
    # sort by length, ties (and so the batch contents) broken at random
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], noise[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def pad(sequences: list[list[int]], pad_id: int = 0):
    """-> tokens LongTensor (batch, max_len) padded with pad_id, lengths (batch,)."""
    import torch

    lengths = torch.tensor([len(s) for s in sequences])
    tokens = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return tokens, lengths


@dataclass(frozen=True)
class Pair:
    """One aligned source/target sentence pair and its line number."""

    src: str
    tgt: str
    line: int


def parallel_paths(data: str, src_lang: str | None, tgt_lang: str | None) -> list[Path]:
    """A TSV file, or with both languages the aligned files `data.src` and `data.tgt`."""
    if src_lang and tgt_lang:
        return [check_file(f"{data}.{src_lang}"), check_file(f"{data}.{tgt_lang}")]
    if src_lang or tgt_lang:
        raise DataError("give both --src-lang and --tgt-lang, or neither for a TSV file")
    path = Path(data)
    # the name is taken literally: `[`, `*` or `**` in it are no pattern
    if not files.holds(path) and any(path.parent.glob(glob.escape(path.name) + ".*")):
        raise DataError(f"{data}: no such file; for aligned files add --src-lang and --tgt-lang")
    return [check_file(data)]


def read_parallel(paths: list[Path]) -> tuple[list[Pair], int]:
    """Read sentence pairs from a TSV file (`source<TAB>target`) or two aligned files.

    Returns the pairs and the number of pairs skipped because a side was empty. A TSV
    line without a tab or with two (a third column would be read as part of the target),
    or aligned files of different lengths, raise DataError.
    """
    pairs, skipped = [], 0
    if len(paths) == 1:
        for line_no, line in read_lines(paths[0]):
            if not line.strip():
                skipped += 1
                continue
            src, tab, tgt = line.partition("\t")
            if not tab or "\t" in tgt:
                how = "a second tab" if tab else "no tab"
                raise DataError(
                    f"{paths[0]}:{line_no}: {how} in the line; write it as source<TAB>target"
                )
            if not (src.strip() and tgt.strip()):
                skipped += 1
                continue
            pairs.append(Pair(src, tgt, line_no))
        return pairs, skipped
    src_path, tgt_path = paths
    counts = [0, 0]
    for src, tgt in itertools.zip_longest(read_lines(src_path), read_lines(tgt_path)):
        counts = [counts[0] + (src is not None), counts[1] + (tgt is not None)]
        if src is None or tgt is None:
            continue  # one file is longer: counted, and reported below
        if src[1].strip() and tgt[1].strip():
            pairs.append(Pair(src[1], tgt[1], src[0]))
        else:
            skipped += 1
    if counts[0] != counts[1]:
        raise DataError(
            f"{src_path} has {counts[0]:,} lines but {tgt_path} has {counts[1]:,}; "
            f"aligned files need one sentence per line in both"
        )
    return pairs, skipped


def token_batches(
    src_lengths: list[int],
    tgt_lengths: list[int],
    max_sentences: int,
    max_tokens: int | None,
    seed: int,
) -> list[list[int]]:
    """Batches of pairs of similar length, each at most `max_sentences` pairs and (when
    given) at most `max_tokens` padded tokens on its longer side, in a random order that
    depends only on `seed` (so that a resumed run sees the same batches)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(src_lengths), generator=generator).tolist()
    order = sorted(
        range(len(src_lengths)), key=lambda i: (src_lengths[i], tgt_lengths[i], noise[i])
    )
    batches, batch, longest = [], [], 0
    for i in order:
        width = max(longest, src_lengths[i], tgt_lengths[i])
        full = len(batch) == max_sentences or (max_tokens and width * (len(batch) + 1) > max_tokens)
        if batch and full:
            batches.append(batch)
            batch, width = [], max(src_lengths[i], tgt_lengths[i])
        batch.append(i)
        longest = width
    if batch:
        batches.append(batch)
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def to_device(tensor, device):
    """Move a batch to the device: from pinned memory without blocking on CUDA, so the
    copy overlaps the work already queued."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
