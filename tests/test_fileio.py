"""Tests of nemon.fileio: atomic writes survive exceptions and SIGKILL; loads name every fault."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nemon import fileio
from nemon.errors import NemonError
from nemon.fileio import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    load_torch_verified,
    sha256_file,
)

WHAT = "model weights"
FIX = "delete it and rerun snakemake to rebuild it"


def leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


# ---------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_replaces_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, memoryview(b"second, longer"))
    assert path.read_bytes() == b"second, longer"
    atomic_write_text(path, "ünïcode\nline\r\n")
    assert path.read_bytes() == "ünïcode\nline\r\n".encode()
    assert leftovers(path.parent, "out.bin") == []


def test_atomic_write_gives_the_mode_open_would_give(tmp_path):
    (tmp_path / "plain").write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic", b"x")
    mode = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == mode


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_an_exception_mid_write_leaves_the_old_file_and_no_temporary(
    tmp_path, monkeypatch, fail_in
):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old content")
    calls = []

    def fail(*args):
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, fail_in, fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new content " * 1000)
    assert calls  # the failure really happened inside the write
    assert path.read_bytes() == b"old content"
    assert leftovers(tmp_path, "out.bin") == []


def test_torch_save_that_fails_writes_nothing(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    with pytest.raises(Exception, match="lambda|pickle"):
        atomic_torch_save({"f": lambda x: x}, path)  # lambdas cannot be pickled
    assert path.read_bytes() == b"old" and leftovers(tmp_path, "model.pt") == []


# The child writes NEW (a different size and byte from OLD) with atomic_write_bytes, and says on
# stdout when it has reached the point where it should be killed.
_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from nemon import fileio

    target, size, point = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    new = b"\\xab" * size

    def hold(label):
        print(label, flush=True)
        time.sleep(120)  # the parent kills us here

    if point == "mid-write":  # half of the bytes are in the temporary file
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return self.f.__exit__(*exc)
            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                hold("half")

        fileio.os.fdopen = lambda fd, mode: HalfWriter(real_fdopen(fd, mode))
    elif point == "before-rename":  # all bytes written and fsynced, not yet renamed
        fileio.os.replace = lambda src, dst: hold("written")
    else:  # timed: killed wherever the write happens to be
        print("start", flush=True)
        while True:
            fileio.atomic_write_bytes(target, new)
    fileio.atomic_write_bytes(target, new)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("point", ["mid-write", "before-rename", "timed"])
def test_sigkill_while_writing_leaves_old_or_complete_new_never_truncated(tmp_path, point):
    size = 64 * 2**20
    path = tmp_path / "big.bin"
    old = b"\x01" * (size // 2)
    path.write_bytes(old)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(size), point],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline().strip()
        assert line in {"half", "written", "start"}, child.stderr.read()
        if point == "timed":  # wait until it has replaced the file once, then kill it anywhere
            deadline = time.monotonic() + 60
            while path.stat().st_size != size and time.monotonic() < deadline:
                time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    content = path.read_bytes()
    if point == "timed":
        assert content == b"\xab" * size  # replaced at least once, complete each time
    else:
        assert content == old
        # evidence that the kill hit mid-write: the temporary file, partial or complete
        (tmp,) = (p for p in tmp_path.iterdir() if p.name != "big.bin")
        assert tmp.name.startswith(".big.bin.") and tmp.name.endswith(".tmp")
        assert tmp.stat().st_size == (size // 2 if point == "mid-write" else size)


# ------------------------------------------------------------------------------- digests


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")  # FIPS 180-2 test vector
    assert sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    data = os.urandom(3 * 2**20 + 17)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_torch_save_digest_round_trip(tmp_path):
    obj = {"T": torch.randn(4, 5, dtype=torch.float64), "step": 3, "names": ["a", "b"]}
    path = tmp_path / "model.pt"
    digest = atomic_torch_save(obj, path)
    assert digest == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    back = load_torch_verified(path, sha256=digest, what=WHAT, fix=FIX)
    assert torch.equal(back["T"], obj["T"]) and back["step"] == 3 and back["names"] == ["a", "b"]
    assert load_torch_verified(path, sha256=digest.upper(), what=WHAT, fix=FIX)["step"] == 3
    assert load_torch_verified(path, what=WHAT, fix=FIX)["step"] == 3  # no digest: load only
    assert leftovers(tmp_path, "model.pt") == []


def test_load_maps_to_cpu(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(2)}, path)
    seen = {}
    real_load = torch.load

    def spy(*args, **kw):
        seen.update(kw)
        return real_load(*args, **kw)

    monkeypatch.setattr(fileio.torch, "load", spy)
    load_torch_verified(path, what=WHAT, fix=FIX)
    assert seen == {"map_location": "cpu", "weights_only": True}


# -------------------------------------------------------------------- every failure is named


class _NotAllowed:
    pass


def _faults():
    """(name, prepare(path) -> sha256 or None, expected fragment of the problem)."""
    good = {"w": torch.arange(1000, dtype=torch.float32)}

    def saved(path):
        return atomic_torch_save(good, path)

    def missing(path):
        return None

    def folder(path):
        path.mkdir()

    def wrong_digest(path):
        saved(path)
        return "0" * 64

    def flipped_byte(path):
        digest = saved(path)
        raw = bytearray(path.read_bytes())
        raw[raw.find(good["w"].numpy().tobytes()) + 40] ^= 0x10  # inside the tensor's bytes
        path.write_bytes(raw)
        return digest

    def truncated(path):
        saved(path)
        path.write_bytes(path.read_bytes()[:300])

    def empty(path):
        path.write_bytes(b"")

    def text(path):
        path.write_text("not a torch file\n")

    def unsafe(path):
        torch.save({"obj": _NotAllowed()}, path)

    return [
        ("missing", missing, "it does not exist"),
        ("folder", folder, "it is not a file"),
        ("wrong-digest", wrong_digest, "its sha256 is [0-9a-f]{64} but 0{64} was recorded"),
        ("flipped-byte", flipped_byte, "its sha256 is [0-9a-f]{64} but [0-9a-f]{64} was recorded"),
        ("truncated", truncated, "failed finding central directory"),
        ("empty", empty, "torch.load failed on its 0 bytes .EOFError"),
        ("text", text, "torch.load failed on its 17 bytes"),
        ("unsafe-class", unsafe, "Unsupported global: GLOBAL .*_NotAllowed was not an allowed"),
    ]


FAULTS = _faults()


@pytest.mark.parametrize(
    ("prepare", "problem"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_every_load_failure_names_file_problem_and_fix(tmp_path, prepare, problem):
    path = tmp_path / "model.pt"
    digest = prepare(path)
    with pytest.raises(CorruptFileError, match=problem) as e:
        load_torch_verified(path, sha256=digest, what=WHAT, fix=FIX)
    msg = str(e.value)
    assert msg.startswith(f"{WHAT} {path} cannot be used: ") and msg.endswith(f"; {FIX}")
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    assert isinstance(e.value, NemonError) and isinstance(e.value, RuntimeError)
