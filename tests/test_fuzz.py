"""Random bytes and random lines fed to every reader and, through stdin, to classify and
translate: each either works or ends with one `Error:` line and exit code 1, never an
uncaught exception."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqtool.cli import cli
from seqtool.data import parallel_paths, read_labeled, read_lines, read_parallel
from seqtool.errors import DataError

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# bytes that make lines, fields and labels: tabs, line ends, spaces, label prefixes,
# bad UTF-8 (lone continuation bytes, a cut multi-byte character) and markup brackets
PARTS = st.sampled_from(
    [b"\t", b"\n", b"\r\n", b" ", b"__label__", b"a", b"[x]", b"[/y]", b"\xe9", b"\x80",
     b"\xe2\x82", b"\xe2\x82\xac", b"\x00", b"word"]
)  # fmt: skip
RAW = st.one_of(st.binary(max_size=200), st.lists(PARTS, max_size=40).map(b"".join))
TEXT_LINES = st.lists(st.text(max_size=30), max_size=10).map("\n".join)


def read_all(path) -> None:
    """Every reader on one file: DataError is the only failure allowed."""
    for read in (
        lambda: list(read_lines(path)),
        lambda: read_labeled(path),
        lambda: read_parallel(parallel_paths(str(path), None, None)),
    ):
        try:
            read()
        except DataError as err:
            assert "\n" not in str(err)


@FUZZ
@given(RAW)
def test_readers_on_random_bytes(tmp_path, data):
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    read_all(path)


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=30)), max_size=10))
def test_readers_on_random_tsv_and_fasttext_lines(tmp_path, rows):
    path = tmp_path / "data.tsv"
    tsv = "\n".join(f"{label}\t{text}" for label, text in rows)
    fasttext = "\n".join(f"__label__{label} {text}" for label, text in rows)
    for content in (tsv, fasttext):
        path.write_text(content, encoding="utf-8")
        read_all(path)


@FUZZ
@given(TEXT_LINES, TEXT_LINES)
def test_random_parallel_files(tmp_path, src, tgt):
    prefix = tmp_path / "data"
    (tmp_path / "data.de").write_text(src, encoding="utf-8")
    (tmp_path / "data.en").write_text(tgt, encoding="utf-8")
    try:
        read_parallel(parallel_paths(str(prefix), "de", "en"))
    except DataError as err:
        assert "\n" not in str(err)


def invoke(*args, input: bytes):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def train(tmp_path_factory, task: str, data: str, *extra) -> str:
    folder = tmp_path_factory.mktemp(task)
    (folder / "train.txt").write_text(data)
    out = folder / "run"
    result = invoke(
        "train", task, "--train", folder / "train.txt", "--out", out, "--max-steps", 2,
        "--hidden-size", 8, "--embedding-size", 8, "--batch-size", 4, "--tokenizer", "char",
        *extra, input=b"",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    lines = "".join(f"pos\tgood film {i}\nneg\tbad plot {i}\n" for i in range(20))
    return train(tmp_path_factory, "classifier", lines)


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    lines = "".join(f"eins {i}\tone {i}\nzwei {i}\ttwo {i}\n" for i in range(20))
    return train(tmp_path_factory, "translator", lines, "--max-length", 20)


def check(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


@FUZZ
@given(RAW)
def test_classify_random_stdin(classifier, data):
    check(invoke("classify", classifier, "--device", "cpu", input=data))


@FUZZ
@given(RAW)
def test_translate_random_stdin(translator, data):
    result = invoke("translate", translator, "--device", "cpu", "--beam-size", 2, input=data)
    check(result)
    if result.exit_code == 0:  # one output line per input line
        lines = data.split(b"\n")
        assert result.stdout.count("\n") == len(lines) - (lines[-1] == b"")


# -- checkpoints: a real one with a key, or a key inside one, replaced by something else ----

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
    | st.binary(max_size=4) | st.integers(0, 3).map(lambda n: torch.zeros(n)),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)  # fmt: skip
DROP = object()


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    return train(tmp_path_factory, "generator", "the quick brown fox jumps\n" * 40, "--seq-len", 8)


def places(ckpt: dict) -> list[tuple[str, ...]]:
    """Every key of a checkpoint and every key of its dicts, and a key of neither."""
    found = [("new",)]
    for key, value in ckpt.items():
        found.append((key,))
        if isinstance(value, dict):
            found += [(key, inner) for inner in value]
    return found


@pytest.mark.parametrize("task", ["generator", "classifier", "translator"])
def test_load_and_info_on_damaged_checkpoints(request, tmp_path_factory, task):
    import copy

    import seqtool
    from seqtool.errors import SeqtoolError

    path = tmp_path_factory.mktemp("damaged") / "best.ckpt"
    real = torch.load(Path(request.getfixturevalue(task)) / "last.ckpt", weights_only=True)

    @settings(FUZZ, max_examples=40)
    @given(st.sampled_from(places(real)), st.one_of(st.just(DROP), VALUES))
    def damaged(place, value):
        ckpt = copy.deepcopy(real)
        inner = ckpt
        for key in place[:-1]:
            inner = inner[key]
        if value is DROP:
            inner.pop(place[-1], None)
        else:
            inner[place[-1]] = value
        torch.save(ckpt, path)
        for read in (lambda: seqtool.load(path, device="cpu"), lambda: seqtool.info(path)):
            try:
                read()
            except SeqtoolError as err:
                assert "\n" not in str(err) and str(err).startswith(str(path))
        check(invoke("info", path, input=b""))

    damaged()
