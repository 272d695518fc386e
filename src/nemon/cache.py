"""The prepared-data cache: a :class:`~nemon.data.Dataset` stored as plain tensors, with a digest.

Rule ``prepare_data`` writes one file per data set with :func:`save_prepared`;
training and evaluation read it back with :func:`load_prepared`. The file is a
torch file (readable with ``torch.load(path, weights_only=True)``) holding the
four tensors ``train_x``, ``train_y``, ``test_x``, ``test_y`` and a ``meta``
dict with ``format``, ``name``, ``source``, ``mean``, ``std`` and ``sha256``,
the :func:`content_digest` of everything else. Loading recomputes the digest,
so a single altered byte, label or pixel order is detected (a zip member of a
torch file carries no checksum that ``torch.load`` verifies).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .data import Dataset, pixel_stats
from .errors import DatasetError
from .fileio import CorruptFileError, atomic_torch_save, load_torch_verified

__all__ = ["PREPARED_FORMAT", "content_digest", "load_prepared", "save_prepared"]

# Bump whenever the layout or the digest changes: files of another format are refused, not guessed.
# nemon.data/1 had no digest.
PREPARED_FORMAT = "nemon.prepared/2"

TENSOR_KEYS = ("train_x", "train_y", "test_x", "test_y")
META_KEYS = ("format", "name", "source", "mean", "std", "sha256")

_FIX = "delete it and rerun snakemake: rule prepare_data rebuilds it"


def _update_field(h: hashlib._Hash, data: bytes | memoryview) -> None:
    # Length-prefixed, so that no two different field sequences hash the same bytes.
    h.update(struct.pack(">Q", len(data)))
    h.update(data)


def content_digest(meta: Mapping[str, object], tensors: Mapping[str, Tensor]) -> str:
    """sha256 over the meta fields that matter and every tensor's dtype, shape and bytes.

    In a fixed order: ``format``, ``name``, ``source`` (UTF-8), ``mean``,
    ``std`` (IEEE-754 big-endian doubles), then for each of ``train_x``,
    ``train_y``, ``test_x``, ``test_y`` its key, dtype name, shape and raw
    C-order bytes, each field prefixed with its length. Hashes the tensor
    memory in place (no copy of contiguous CPU tensors).
    """
    h = hashlib.sha256()
    for key in ("format", "name", "source"):
        _update_field(h, str(meta[key]).encode())
    for key in ("mean", "std"):
        _update_field(h, struct.pack(">d", float(meta[key])))
    for key in TENSOR_KEYS:
        t = tensors[key].detach().cpu().contiguous()
        _update_field(h, key.encode())
        _update_field(h, str(t.dtype).encode())
        _update_field(h, struct.pack(f">{t.dim()}Q", *t.shape))
        _update_field(h, memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_prepared(ds: Dataset, path: str | os.PathLike[str]) -> str:
    """Write ``ds`` to ``path`` atomically with its content digest; returns that digest.

    Refuses (:class:`DatasetError`) a data set whose ``mean``/``std`` are not
    the pixel statistics of its training images, so the cache never records
    an input normalisation (MATH 1) that does not belong to its images.
    """
    mean, std = pixel_stats(ds.train_x)
    if not (math.isclose(mean, ds.mean, abs_tol=1e-9) and math.isclose(std, ds.std, abs_tol=1e-9)):
        raise DatasetError(
            f"{ds.name}: mean={ds.mean!r}, std={ds.std!r} are not the statistics of its training "
            f"images (mean={mean!r}, std={std!r}); build the Dataset with pixel_stats(train_x)"
        )
    tensors = {key: getattr(ds, key).detach().cpu().contiguous() for key in TENSOR_KEYS}
    meta = {
        "format": PREPARED_FORMAT,
        "name": ds.name,
        "source": ds.source,
        "mean": float(ds.mean),
        "std": float(ds.std),
    }
    meta["sha256"] = content_digest(meta, tensors)
    atomic_torch_save({**tensors, "meta": meta}, path)
    return meta["sha256"]


def load_prepared(path: str | os.PathLike[str], *, expected_name: str | None = None) -> Dataset:
    """Read and verify a file written by :func:`save_prepared`.

    Checks, in order: the file loads (:func:`~nemon.fileio.load_torch_verified`),
    its format is :data:`PREPARED_FORMAT`, every key is present with the
    right type, the recomputed :func:`content_digest` equals the recorded one,
    the recorded name is ``expected_name`` (when given), and the tensors make a
    valid :class:`Dataset`. Any fault raises
    :class:`~nemon.fileio.CorruptFileError` naming the file, the fault and
    what to do (delete it and rerun; rule ``prepare_data`` rebuilds it).
    """
    path = Path(path)
    what = "prepared dataset"
    payload = load_torch_verified(path, what=what, fix=_FIX)

    def corrupt(problem: str) -> CorruptFileError:
        return CorruptFileError(f"{what} {path} cannot be used: {problem}; {_FIX}")

    if not isinstance(payload, Mapping):
        raise corrupt(f"it holds a {type(payload).__name__}, not a dict")
    meta = payload.get("meta")
    if not isinstance(meta, Mapping):
        raise corrupt(f"its 'meta' entry is {type(meta).__name__}, not a dict")
    if meta.get("format") != PREPARED_FORMAT:
        raise corrupt(
            f"it has format {meta.get('format')!r}, this nemon reads {PREPARED_FORMAT!r} "
            "(it was written by another version)"
        )
    missing = [k for k in TENSOR_KEYS if k not in payload]
    missing += [f"meta.{k}" for k in META_KEYS if k not in meta]
    if missing:
        raise corrupt(f"it lacks {', '.join(missing)}")
    wrong = [k for k in TENSOR_KEYS if not isinstance(payload[k], Tensor)]
    wrong += [f"meta.{k}" for k in ("name", "source", "sha256") if not isinstance(meta[k], str)]
    wrong += [f"meta.{k}" for k in ("mean", "std") if type(meta[k]) is not float]
    if wrong:
        raise corrupt(f"it has the wrong type for {', '.join(wrong)}")
    found = content_digest(meta, payload)
    if found != meta["sha256"]:
        raise corrupt(
            f"its content sha256 is {found} but {meta['sha256']} was recorded when it was "
            "written, so its tensors or meta data have changed since"
        )
    if expected_name is not None and meta["name"] != expected_name:
        raise corrupt(f"it holds data set {meta['name']!r}, expected {expected_name!r}")
    try:
        return Dataset(
            name=meta["name"],
            source=meta["source"],
            mean=meta["mean"],
            std=meta["std"],
            **{k: payload[k] for k in TENSOR_KEYS},
        )
    except DatasetError as e:
        raise corrupt(str(e)) from e
