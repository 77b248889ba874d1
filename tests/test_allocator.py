"""The allocator settings keep a freed activation-sized buffer in the process."""

import os
import subprocess
import sys

import pytest

from seqtool.allocator import _glibc

pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc's allocator only")

# Fills and frees a 64 MB tensor; prints whether the settings applied and how many MiB
# of resident memory the process kept after the free.
PROBE = """
import os, sys, torch
if sys.argv[1] == "on":
    from seqtool.allocator import keep_freed_memory
    print(keep_freed_memory())
else:
    print("off")
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = resident()
torch.ones(16 << 20)
print(round(resident() - before))
"""


def kept_mib(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    applied, kept = out.stdout.split()
    return applied, int(kept)


def test_freed_memory_stays_for_the_next_step():
    assert kept_mib("off")[1] < 16  # glibc's default: a 64 MB block goes back at once
    applied, kept = kept_mib("on")
    assert applied == "True"
    assert kept >= 60


def test_a_users_own_malloc_settings_are_left_alone():
    applied, kept = kept_mib("on", MALLOC_ARENA_MAX="2")
    assert applied == "False"
    assert kept < 16
