"""The package as a user installs it: an sdist and a wheel built from this tree."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sdist_and_wheel_build_without_warnings_and_carry_the_license(tmp_path):
    pytest.importorskip("build")
    # --no-isolation: the build uses this environment's setuptools, no download; without
    # PYTHONDONTWRITEBYTECODE, which makes setuptools warn that it skips byte-compiling
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp_path, ROOT],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "warning" not in (built.stdout + built.stderr).lower(), built.stdout + built.stderr
    from seqtool.version import __version__

    (wheel,) = tmp_path.glob(f"seqtool-{__version__}-*.whl")
    assert (tmp_path / f"seqtool-{__version__}.tar.gz").exists()
    names = zipfile.ZipFile(wheel).namelist()
    assert f"seqtool-{__version__}.dist-info/licenses/LICENSE" in names
    assert {"seqtool/py.typed", "seqtool/serve/static/index.html"} <= set(names)
