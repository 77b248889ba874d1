"""corpora/get.py: downloads from file:// addresses, sha256 checks, conversions, errors."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "corpora" / "get.py"
SHARED = ROOT.parent / "shared" / "corpora"


def _load():
    spec = importlib.util.spec_from_file_location("corpora_get", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


get = _load()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local(path: Path, data: bytes) -> get.Download:
    """Write `data` to `path` and return a download of it, with its own sha256."""
    path.write_bytes(data)
    return get.Download(path.as_uri(), sha256(data))


def needs_shared(name: str) -> Path:
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here")
    return folder


def test_help_lists_every_corpus_and_hash():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for name, corpus in get.CORPORA.items():
        assert name in result.stdout
        for file, sha in corpus.outputs.items():
            assert f"{file:<12} sha256 {sha}" in result.stdout


def test_unknown_name_is_one_line_error(tmp_path, capsys):
    assert get.main(["wikitext", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == (
        "Error: unknown corpus 'wikitext'; choose one of tinyshakespeare, multi30k, sst2\n"
    )
    assert not (tmp_path / "out").exists()


def test_unknown_name_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "nope", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown corpus 'nope'")
    assert result.stdout == ""


def test_wrong_sha256_is_one_line_error_and_writes_nothing(tmp_path, capsys):
    # a file of our own at the address of input.txt: its sha256 is not the pinned one
    source = tmp_path / "input.txt"
    source.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    url = source.as_uri()
    expected = get.CORPORA["tinyshakespeare"].downloads["input.txt"].sha256
    out = tmp_path / "data" / "tinyshakespeare"
    code = get.main(
        ["tinyshakespeare", str(out)], downloads={"input.txt": get.Download(url, expected)}
    )
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"Error: sha256 mismatch for {url}: expected {expected}, "
        f"got {sha256(source.read_bytes())} (a changed or damaged download); nothing was written"
    )
    assert not (tmp_path / "data").exists()


def test_converted_file_with_wrong_sha256_writes_nothing(tmp_path, capsys):
    # the download matches the sha256 it is given, but what it converts to is not the
    # pinned train.txt / valid.txt: nothing may be written
    out = tmp_path / "out"
    download = local(tmp_path / "input.txt", b"to be, or not to be\n" * 10)
    assert get.main(["tinyshakespeare", str(out)], downloads={"input.txt": download}) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("Error: sha256 mismatch for input.txt made from the download")
    assert err[-1].endswith("; nothing was written")
    assert not out.exists()


def test_failed_download_is_one_line_error(tmp_path, capsys):
    missing = (tmp_path / "missing.txt").as_uri()
    download = get.Download(missing, "0" * 64)
    assert get.main(["tinyshakespeare", str(tmp_path / "out")], {"input.txt": download}) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"Error: could not download {missing}: ")
    assert not (tmp_path / "out").exists()


def test_end_to_end_on_a_corpus_of_our_own(tmp_path, monkeypatch, capsys):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 7
    raw = text.encode()
    cut = int(len(text) * 0.9)
    corpus = get.Corpus(
        source="here",
        license="none",
        downloads={"input.txt": local(tmp_path / "input.txt", raw)},
        outputs={
            "input.txt": sha256(raw),
            "train.txt": sha256(text[:cut].encode()),
            "valid.txt": sha256(text[cut:].encode()),
        },
        convert=get.split_shakespeare,
    )
    monkeypatch.setitem(get.CORPORA, "tiny", corpus)
    out = tmp_path / "data" / "tiny"
    assert get.main(["tiny", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["input.txt", "train.txt", "valid.txt"]
    assert (out / "train.txt").read_text() + (out / "valid.txt").read_text() == text
    assert (out / "valid.txt").read_text() == text[cut:]

    # files already there and right: checked, not downloaded again
    (tmp_path / "input.txt").unlink()
    capsys.readouterr()
    assert get.main(["tiny", str(out)]) == 0
    assert "already holds every file" in capsys.readouterr().err

    # a damaged file is downloaded and written again
    (tmp_path / "input.txt").write_bytes(raw)
    (out / "valid.txt").write_text("damaged")
    assert get.main(["tiny", str(out)]) == 0
    assert (out / "valid.txt").read_text() == text[cut:]


def test_sst2_conversion():
    raw = b"1 a gorgeous ,  witty film \n0 the plot was\tawful .\n\n"
    got = get.sst2_to_tsv({"stsa.binary.dev": raw})
    assert got == {
        "valid.tsv": b"positive\ta gorgeous , witty film\nnegative\tthe plot was awful .\n"
    }
    with pytest.raises(get.GetError, match=r"stsa.binary.test line 2: label '2' is not 0 or 1"):
        get.sst2_to_tsv({"stsa.binary.test": b"1 fine\n2 odd\n"})


def test_tinyshakespeare_end_to_end_from_a_local_copy(tmp_path):
    shared = needs_shared("tinyshakespeare")
    # the pinned sha256 stays: only the address changes
    copy = tmp_path / "input.txt"
    copy.write_bytes((shared / "input.txt").read_bytes())
    pinned = get.CORPORA["tinyshakespeare"].downloads["input.txt"]
    out = tmp_path / "data" / "tinyshakespeare"
    downloads = {"input.txt": get.Download(copy.as_uri(), pinned.sha256)}
    assert get.main(["tinyshakespeare", str(out)], downloads) == 0
    assert sorted(p.name for p in out.iterdir()) == ["input.txt", "train.txt", "valid.txt"]
    for name in ("input.txt", "train.txt", "valid.txt"):
        assert (out / name).read_bytes() == (shared / name).read_bytes()
    assert len((out / "train.txt").read_bytes()) == 1_003_854


def test_multi30k_conversion_gives_the_pinned_files(tmp_path):
    # the source files are gzipped copies of the shared ones; the gzip bytes differ
    # from the source's, so their sha256 is replaced, but every written file must
    # still match its pinned sha256
    shared = needs_shared("multi30k")
    names = {"train": "train", "val": "valid", "test_2016_flickr": "test2016"}
    downloads = {}
    for stem, here in names.items():
        for lang in ("de", "en"):
            data = gzip.compress((shared / f"{here}.{lang}").read_bytes(), mtime=0)
            downloads[f"{stem}.{lang}.gz"] = local(tmp_path / f"{stem}.{lang}.gz", data)
    out = tmp_path / "data" / "multi30k"
    assert get.main(["multi30k", str(out)], downloads) == 0
    for name in get.CORPORA["multi30k"].outputs:
        assert (out / name).read_bytes() == (shared / name).read_bytes()


def test_sst2_conversion_gives_the_pinned_files(tmp_path):
    # source files rebuilt from the shared TSV ("1 text"), with extra whitespace that the
    # conversion collapses; every written file must match its pinned sha256
    shared = needs_shared("sst2")
    downloads = {}
    for source, here in get.SST2_NAMES.items():
        lines = []
        for line in (shared / here).read_text().splitlines():
            label, text = line.split("\t")
            lines.append(("1 " if label == "positive" else "0 ") + text.replace(" ", "  ", 1))
        data = ("\n".join(lines) + "\n").encode()
        downloads[source] = local(tmp_path / source, data)
    out = tmp_path / "data" / "sst2"
    assert get.main(["sst2", str(out)], downloads) == 0
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        assert (out / name).read_bytes() == (shared / name).read_bytes()
