"""Safe writing and checked reading of the files that pass between workflow stages.

Every stage writes its outputs with :func:`atomic_write_bytes` (or one of its
wrappers), so a file at its final name is always complete: a crash, a kill or
a full disk leaves either the old file or none, never a truncated one that a
later stage would read. Every stage reads torch files with
:func:`load_torch_verified`, which turns any fault (missing, truncated, altered,
not a torch file) into one :class:`CorruptFileError` that names the file, says
what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

import torch

from .errors import CorruptFileError

__all__ = [
    "CorruptFileError",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_torch_verified",
    "sha256_file",
]

# mkstemp creates its file with mode 0o600; the final file should get the usual mode 0o666 minus
# the umask, as open() would give it. Read once at import (os.umask can only be read by setting
# it, which would race with threads creating files if done on every write).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened, renames are durable already
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself has happened
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``.

    The bytes go to a uniquely named temporary file in the same folder (so two
    writers never share one, and the final rename stays on one file system),
    are flushed and fsynced, and the file is then renamed over ``path`` with
    :func:`os.replace`, which is atomic. On any exception the temporary file is
    removed and ``path`` is left untouched. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as ``encoding``, newlines as given."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> str:
    """``torch.save(obj)`` to ``path`` atomically; returns the sha256 hex digest of the file.

    The object is serialised into memory first, so nothing reaches the disk
    unless serialisation succeeded; the digest is of exactly the bytes written
    and can be recorded by the caller for :func:`load_torch_verified`.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    view = buffer.getbuffer()
    try:
        digest = hashlib.sha256(view).hexdigest()
        atomic_write_bytes(path, view)
    finally:
        view.release()
    return digest


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of the file at ``path``, read in chunks (constant memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_torch_verified(
    path: str | os.PathLike[str], *, sha256: str | None = None, what: str, fix: str
) -> object:
    """Load a torch file on the CPU with ``weights_only=True``, after checking its digest.

    ``what`` says what the file is (``"model weights"``) and ``fix`` what the
    user should do about a bad one (``"delete it and rerun snakemake to rebuild
    it"``). When ``sha256`` is given the file's bytes are checked against it and
    the very bytes checked are the ones loaded. Any failure -- the file is
    missing or unreadable, its digest differs, it is truncated (torch reports
    "failed finding central directory"), it is not a torch file or holds
    objects that ``weights_only`` loading refuses -- raises
    :class:`CorruptFileError` naming the file, the problem and ``fix``.
    """
    path = Path(path)

    def corrupt(problem: str) -> CorruptFileError:
        return CorruptFileError(f"{what} {path} cannot be used: {problem}; {fix}")

    if not path.is_file():
        problem = "it is not a file" if path.exists() else "it does not exist"
        raise corrupt(problem)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise corrupt(f"it cannot be read ({type(e).__name__}: {e})") from e
    if sha256 is not None:
        found = hashlib.sha256(raw).hexdigest()
        if found != sha256.lower():
            raise corrupt(
                f"its sha256 is {found} but {sha256} was recorded when it was written, "
                "so it has changed since"
            )
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types: RuntimeError, UnpicklingError, EOFError...
        raise corrupt(
            f"torch.load failed on its {len(raw)} bytes ({_describe_load_error(e)}); it is "
            "truncated, corrupt or not a file of the kind expected"
        ) from e


def _describe_load_error(e: Exception) -> str:
    """The type and the informative sentence of a torch.load error, without torch's advice.

    Torch's weights-only refusal is a page of text that suggests
    ``weights_only=False``, which must never be the fix here; its one useful
    sentence follows ``WeightsUnpickler error:``.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    text = " ".join(text.split())
    sentence = text.split(". ", 1)[0].rstrip(".")
    return f"{type(e).__name__}: {sentence}" if sentence else f"{type(e).__name__}, no message"
