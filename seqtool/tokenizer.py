"""Sentencepiece wrapper: train in memory, encode, decode, serialize as proto bytes.

Every tokenizer keeps text exactly: identity normalization, whitespace kept as is,
byte fallback for characters never seen in training. Sentencepiece uses U+2581 as its
own whitespace mark, so a literal U+2581 in the text is written as its three byte
pieces, which decode back to U+2581 rather than to a space.
"""

from __future__ import annotations

import functools
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import sentencepiece as spm

from seqtool import distributed
from seqtool.config import MAX_VOCAB
from seqtool.errors import DataError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_SPACE_MARK = "\u2581"
# sentencepiece skips training sentences longer than this many bytes
_MAX_PIECE_OF_LINE = 1000
# sentencepiece's messages for a vocabulary too large or too small for the corpus
_TOO_HIGH = re.compile(r"Vocabulary size too high .*<= (\d+)")
_TOO_LOW = re.compile(r"smaller than required_chars\. \d+ vs (\d+)")
# pad, bos, eos, unk and the 256 byte-fallback pieces: below this sentencepiece fails
# with internal messages that do not say the size it needs
META_PIECES = 4 + 256


# `--tokenizer auto`: a word seen fewer than RARE_COUNT times is one a subword vocabulary
# learns as a whole piece without seeing it often enough; lines shorter than SHORT_LINE
# characters with fewer than FORMAT_TYPES kinds of recurring words are formatted strings
# (dates, codes, numbers: the dates task's source has 404) that a char model reads whole,
# where short natural sentences (thousands of recurring words) read better in subwords:
# on a held-out corpus of everyday English-French pairs (31 characters on average; not in
# this repository's bench), 1 core, fp32: char 20.6 BLEU after 30 minutes, unigram 23.9
# after 10
RARE_COUNT, RARE_MASS, SHORT_LINE, FORMAT_TYPES = 3, 0.5, 32, 2_000
AUTO_SAMPLE = 20_000  # lines looked at to decide, spread over the whole file


def choose_kind(lines: Sequence[str]) -> tuple[str, str]:
    """`--tokenizer auto` for one side's training lines: "char" or "unigram", and why.

    Subword pieces pay where words recur (running text: Multi30k, SST-2, short everyday
    sentences). Where most words occur only once or twice (ids, dates written without
    spaces) unigram makes pieces of whole strings and the model memorizes instead of
    copying, and on short formatted strings of a few kinds of words characters keep
    sequences short anyway: both get "char". The lines looked at are spread over the
    file: a file ordered by length starts with its shortest lines.
    """
    sample = [line for line in lines[:: max(1, len(lines) // AUTO_SAMPLE)] if line.strip()]
    words = Counter(w for line in sample for w in line.split())
    total = sum(words.values())
    rare = sum(n for n in words.values() if n < RARE_COUNT) / max(total, 1)
    kinds = sum(1 for n in words.values() if n >= RARE_COUNT)
    mean = sum(map(len, sample)) / max(len(sample), 1)
    if rare > RARE_MASS:
        return "char", (
            f"{rare:.0%} of the words occur fewer than {RARE_COUNT} times: subword pieces "
            "would be whole strings"
        )
    if mean < SHORT_LINE and kinds < FORMAT_TYPES:
        return "char", (
            f"lines are short ({mean:.0f} characters on average) with {kinds:,} kinds of "
            f"recurring words: formatted strings"
        )
    return "unigram", (
        f"words recur ({1 - rare:.0%} occur {RARE_COUNT} times or more, {kinds:,} kinds) in "
        f"lines of {mean:.0f} characters on average"
    )


def resolve_kind(kind: str, vocab_size: int | None, lines: Sequence[str]) -> tuple[str, str]:
    """The tokenizer kind to train and, for "auto", why (else ""). A vocabulary size
    given with "auto" is a subword setting: unigram."""
    if kind != "auto":
        return kind, ""
    if vocab_size is not None:
        return "unigram", f"--vocab-size {vocab_size} given"
    return choose_kind(lines)


# `--vocab-size` unset: a subword vocabulary holds a piece for every word seen at least
# RECUR_COUNT times, up to the task's cap (a translator's: 4,000 per side). Measured
# against the sizes chosen by hand: Multi30k (29,000 pairs) gives 9,758 German / 7,960
# English recurring words (4,000 beat 8,000 there), its first 10,000 pairs 4,549 / 4,159
# (4,000 measured best by hand). Words seen once are left to subword pieces: a whole
# piece for them would be learned from one example.
RECUR_COUNT = 2
SIZE_SAMPLE = 2_000_000  # lines counted, as many as sentencepiece trains on


def subword_size(lines: Iterable[str], cap: int, recur: int = RECUR_COUNT) -> tuple[int, str]:
    """The vocabulary size for a subword tokenizer of `lines`, at most `cap`, and why:
    the words seen `recur` times or more, every character, the 256 byte pieces and the
    4 special ids."""
    words: Counter[str] = Counter()
    chars: set[str] = set()
    for line in islice(lines, SIZE_SAMPLE):
        words.update(line.split())
        chars.update(line)
    recurring = sum(1 for n in words.values() if n >= recur)
    size = min(cap, recurring + len(chars) + 256 + 4)
    capped = f", at most {cap:,}" if size == cap else ""
    return size, (
        f"up to {size:,} pieces: {recurring:,} words seen {recur} "
        f"{'time' if recur == 1 else 'times'} or more, "
        f"{len(chars):,} characters, 256 bytes, 4 special ids{capped}"
    )


def plan(
    kind: str, vocab_size: int | None, lines: Sequence[str], cap: int, recur: int = RECUR_COUNT
) -> tuple[str, int, str]:
    """What to train on one side's training lines: the kind (`auto` resolved), the
    vocabulary size (`vocab_size` when given, else subword_size's with `recur`), and why
    ("" when the user chose both). A char tokenizer takes every character: `cap` is then
    unused. Sentencepiece may make fewer pieces than asked: the size is then fitted."""
    kind, why = resolve_kind(kind, vocab_size, lines)
    if vocab_size is not None or kind == "char":
        return kind, vocab_size or cap, why
    size, reason = subword_size(lines, cap, recur)
    return kind, size, "; ".join(filter(None, (why, reason)))


class Tokenizer:
    """A trained sentencepiece model. Ids: pad 0, bos 1, eos 2, unk 3, then pieces.

    With `lead_space`, encode() reads each text as if it began with a space and decode()
    removes that space: subword pieces start at a space ("▁word"), so without it the
    first word of every line would get other pieces than the same word elsewhere. For
    tokenizers of whole lines (classifier); a stream cut into blocks (generator) must
    not have it.
    """

    def __init__(self, proto: bytes, lead_space: bool = False) -> None:
        # sentencepiece takes empty bytes for a model without pieces, and its parse
        # error names its own source line: say what is wrong instead
        if not isinstance(proto, bytes) or not proto:
            raise ValueError("not a sentencepiece model: no bytes")
        self.proto, self.lead_space = proto, lead_space
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
        except RuntimeError as err:
            raise ValueError("not a sentencepiece model: the bytes do not parse") from err
        self.vocab_size = self.sp.vocab_size()
        self._mark_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_MARK.encode()]

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        kind: str = "char",
        vocab_size: int | None = None,
        default_size: int = 16_000,
        lead_space: bool = False,
    ) -> tuple[Tokenizer, str | None]:
        """Train on `lines` (the training side only; iterated once, twice when the
        vocabulary must shrink). Returns the tokenizer and a warning when the requested
        vocabulary was too large for the corpus and was shrunk. Under torchrun the first
        process trains it and hands it to the others, so that all hold the same one."""
        prefix = " " if lead_space else ""
        proto, warning = distributed.on_main(
            lambda: _fit(lines, kind, vocab_size, default_size, prefix)
        )
        return cls(proto, lead_space), warning

    @classmethod
    def from_checkpoint(cls, ckpt: dict, name: str = "text") -> Tokenizer:
        """The tokenizer `name` ("text", "src", "tgt") a checkpoint holds, with the
        settings it was trained with (checkpoints before `lead_space` lack it: off)."""
        lead_space = ckpt.get("tokenizer_config", {}).get("lead_space", False)
        return cls(ckpt["tokenizers"][name], lead_space)

    def encode(self, text: str) -> list[int]:
        if self.lead_space:
            text = " " + text
        if _SPACE_MARK not in text:
            return self.sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(_SPACE_MARK)):
            if i:
                ids.extend(self._mark_ids)
            ids.extend(self.sp.encode(part))
        return ids

    def encode_batch(self, texts: list[str], num_threads: int = -1) -> list[list[int]]:
        if any(_SPACE_MARK in t for t in texts):
            return [self.encode(t) for t in texts]
        if self.lead_space:
            texts = [" " + t for t in texts]
        return self.sp.encode(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        text = self.sp.decode([int(i) for i in ids])
        return text[1:] if self.lead_space and text.startswith(" ") else text

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(int(token_id))

    def is_byte(self, token_id: int) -> bool:
        return self.sp.is_byte(int(token_id))

    @functools.cached_property
    def byte_ids(self) -> frozenset[int]:
        """The ids of the byte pieces (<0x00> ... <0xFF>)."""
        return frozenset(i for i in range(self.vocab_size) if self.sp.is_byte(i))


class StreamDecoder:
    """Turns token ids into text one id at a time, for streaming.

    Byte pieces of a character seen only as bytes are held back until the character
    is complete, so that what is printed is always valid text.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pending: list[int] = []

    def push(self, token_id: int) -> str:
        self.pending.append(int(token_id))
        if self.tokenizer.is_byte(token_id) and len(self.pending) < 4:
            raw = b"".join(
                bytes.fromhex(self.tokenizer.piece(i)[3:5])
                for i in self.pending
                if self.tokenizer.is_byte(i)
            )
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return ""
        return self.flush()

    def push_many(self, ids: list[int]) -> str:
        """`push` of each id, joined: each run of ids that are not bytes (with no bytes
        held back before it) in one decode."""
        if not self.pending and self.tokenizer.byte_ids.isdisjoint(ids):
            return self.tokenizer.decode(ids)
        bytes_, out, run = self.tokenizer.byte_ids, [], []
        for i in ids:
            if self.pending or i in bytes_:
                if run:
                    out.append(self.tokenizer.decode(run))
                    run = []
                out.append(self.push(i))
            else:
                run.append(i)
        if run:
            out.append(self.tokenizer.decode(run))
        return "".join(out)

    def flush(self) -> str:
        text = self.tokenizer.decode(self.pending)
        self.pending = []
        return text


def _training_sentences(lines: Iterable[str], prefix: str) -> Iterator[str]:
    """Cut long lines so that sentencepiece does not skip them."""
    for line in lines:
        line = prefix + line
        for start in range(0, len(line), _MAX_PIECE_OF_LINE):
            yield line[start : start + _MAX_PIECE_OF_LINE]


def _fit(
    lines: Iterable[str], kind: str, vocab_size: int | None, default_size: int, prefix: str
) -> tuple[bytes, str | None]:
    """The model proto, and a warning when the requested size had to change."""
    requested = vocab_size
    if vocab_size is None:
        # char: an upper bound only, so every distinct character gets its piece;
        # subword: as large as the corpus allows, up to default_size (fitted silently)
        vocab_size = MAX_VOCAB if kind == "char" else default_size
    vocab_size = max(vocab_size, META_PIECES)
    try:
        return _train_proto(lines, kind, vocab_size, prefix), _resized(requested, vocab_size)
    except RuntimeError as err:
        high, low = _TOO_HIGH.search(str(err)), _TOO_LOW.search(str(err))
        if not (high or low):
            raise DataError(f"sentencepiece could not train a {kind} model: {err}") from err
        fitted = int((high or low).group(1))
        return _train_proto(lines, kind, fitted, prefix), _resized(requested, fitted)


def _resized(requested: int | None, used: int) -> str | None:
    """The warning for a --vocab-size that did not fit the corpus."""
    if requested is None or requested == used:
        return None
    return (
        f"--vocab-size {requested} is too {'large' if used < requested else 'small'} for "
        f"this corpus; using {used}"
    )


def _train_proto(lines: Iterable[str], kind: str, vocab_size: int, prefix: str) -> bytes:
    out = io.BytesIO()
    # a corpus of more than input_sentence_size lines is sampled: seeded, the same corpus
    # gives the same model, so the token cache of an earlier run stays valid
    spm.set_random_generator_seed(1)
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_sentences(lines, prefix),
        model_writer=out,
        model_type=kind,
        vocab_size=vocab_size,
        hard_vocab_limit=kind != "char",
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_by_whitespace=kind != "char",
        byte_fallback=True,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        minloglevel=2,
        num_threads=2,
    )
    return out.getvalue()
