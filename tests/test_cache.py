"""Tests of nemon.cache: the prepared-data file round-trips exactly and every fault is caught.

Each fault is injected exactly (one byte, one label, two pixels...) into a file written by
save_prepared, and the test checks both that the fault is really there and that load_prepared
refuses the file naming it, the problem and what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nemon import cache, data
from nemon.cache import PREPARED_FORMAT, content_digest, load_prepared, save_prepared
from nemon.data import Dataset
from nemon.errors import DatasetError, NemonError
from nemon.fileio import CorruptFileError

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
TENSOR_KEYS = ("train_x", "train_y", "test_x", "test_y")


def small_dataset(name: str = "tiny") -> Dataset:
    g = torch.Generator().manual_seed(0)
    train_x = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8, generator=g)
    mean, std = data.pixel_stats(train_x)
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=torch.arange(20) % 10,
        test_x=torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=g),
        test_y=torch.arange(5),
        source="synthetic",
        mean=mean,
        std=std,
    )


@pytest.fixture
def saved(tmp_path) -> tuple[Dataset, Path]:
    ds = small_dataset()
    path = tmp_path / "tiny.pt"
    save_prepared(ds, path)
    return ds, path


def refused(path: Path, match: str, **kw) -> CorruptFileError:
    """load_prepared(path) raises CorruptFileError matching ``match``, naming file and fix."""
    with pytest.raises(CorruptFileError, match=match) as e:
        load_prepared(path, **kw)
    msg = str(e.value)
    assert str(path) in msg and "prepared dataset" in msg
    assert "delete it and rerun snakemake" in msg and "prepare_data" in msg
    return e.value


def rewrite(path: Path, edit, *, resign: bool = False) -> None:
    """Apply ``edit`` to the stored payload; ``resign`` recomputes the digest (a consistent but
    invalid file, as a buggy writer would leave), otherwise the recorded digest is kept."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    if resign:
        payload["meta"]["sha256"] = content_digest(payload["meta"], payload)
    torch.save(payload, path)


# ------------------------------------------------------------------------------- round trip


def test_round_trip_is_exact_and_records_the_digest(tmp_path):
    ds = small_dataset()
    path = tmp_path / "sub" / "tiny.pt"
    digest = save_prepared(ds, path)
    raw = torch.load(path, weights_only=True)  # plain tensors and a dict: no pickled classes
    assert set(raw) == {*TENSOR_KEYS, "meta"}
    assert set(raw["meta"]) == {"format", "name", "source", "mean", "std", "sha256"}
    assert raw["meta"]["format"] == PREPARED_FORMAT and raw["meta"]["sha256"] == digest
    back = load_prepared(path, expected_name="tiny")
    for key in TENSOR_KEYS:
        assert torch.equal(getattr(back, key), getattr(ds, key))
        assert getattr(back, key).dtype == getattr(ds, key).dtype
    assert (back.name, back.source, back.mean, back.std) == (ds.name, ds.source, ds.mean, ds.std)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.pt"]  # no temporary files


def test_digest_covers_every_field_and_is_stable():
    ds = small_dataset()
    meta = {"format": PREPARED_FORMAT, "name": ds.name, "source": ds.source}
    meta |= {"mean": ds.mean, "std": ds.std}
    tensors = {k: getattr(ds, k) for k in TENSOR_KEYS}
    base = content_digest(meta, tensors)
    assert content_digest(dict(meta), {k: t.clone() for k, t in tensors.items()}) == base
    changed_meta = [{**meta, k: v} for k, v in [("format", "x"), ("name", "x"), ("source", "x")]]
    changed_meta += [{**meta, "mean": ds.mean + 1e-15}, {**meta, "std": ds.std * (1 + 1e-15)}]
    changed_tensors = [
        {**tensors, "train_y": tensors["train_y"].to(torch.int32)},  # same values, other dtype
        {**tensors, "test_x": tensors["test_x"].reshape(5, 784)},  # same bytes, other shape
        {**tensors, "train_x": tensors["test_x"], "test_x": tensors["train_x"]},  # fields swapped
    ]
    digests = [content_digest(m, tensors) for m in changed_meta]
    digests += [content_digest(meta, t) for t in changed_tensors]
    assert base not in digests and len(set(digests)) == len(digests)


def test_save_refuses_statistics_that_are_not_the_training_images(tmp_path):
    ds = small_dataset()
    ds.mean += 0.01
    with pytest.raises(DatasetError, match="pixel_stats"):
        save_prepared(ds, tmp_path / "tiny.pt")
    assert not (tmp_path / "tiny.pt").exists()


# --------------------------------------------------------------------------- injected faults


def test_one_flipped_byte_in_a_test_image_is_detected(saved):
    ds, path = saved
    raw = bytearray(path.read_bytes())
    at = raw.find(ds.test_x.numpy().tobytes())
    assert at >= 0 and raw.count(ds.test_x.numpy().tobytes()) == 1  # stored uncompressed, once
    raw[at + 2 * 784 + 300] ^= 0x01
    path.write_bytes(raw)
    # torch.load itself notices nothing: exactly one pixel of test image 2 differs
    tampered = torch.load(path, weights_only=True)["test_x"]
    assert (tampered != ds.test_x).nonzero().tolist() == [[2, 300 // 28, 300 % 28]]
    refused(path, "content sha256 is [0-9a-f]{64} but [0-9a-f]{64} was recorded")


def test_a_test_label_changed_to_another_valid_class_is_detected(saved):
    ds, path = saved
    rewrite(path, lambda p: p["test_y"].__setitem__(3, 7))
    assert ds.test_y[3] == 3 and 0 <= 7 <= 9  # still a valid class: only the digest can tell
    refused(path, "content sha256")


def test_two_swapped_training_pixels_are_detected(saved):
    ds, path = saved
    a, b = (0, 0, 0), (7, 13, 21)
    assert ds.train_x[a] != ds.train_x[b]

    def swap(p):
        x = p["train_x"]
        x[a], x[b] = x[b].clone(), x[a].clone()

    rewrite(path, swap)
    tampered = torch.load(path, weights_only=True)["train_x"]
    assert data.pixel_stats(tampered) == data.pixel_stats(ds.train_x)  # mean/std cannot see it
    refused(path, "content sha256")


def test_a_recorded_name_edited_to_another_data_set_is_detected(saved):
    _, path = saved
    rewrite(path, lambda p: p["meta"].update(name="fashion-mnist"))
    refused(path, "content sha256")


def test_a_consistent_file_of_another_data_set_is_refused_by_name(tmp_path):
    path = tmp_path / "mnist.pt"  # e.g. a fashion-mnist cache copied over the mnist one
    save_prepared(small_dataset("fashion-mnist"), path)
    refused(path, "holds data set 'fashion-mnist', expected 'mnist'", expected_name="mnist")
    assert load_prepared(path, expected_name="fashion-mnist").name == "fashion-mnist"


@pytest.mark.parametrize("keep", [-1, -22, 0.5, 200, 10, 0], ids=lambda k: f"keep-{k}")
def test_a_truncated_file_is_detected(saved, keep):
    _, path = saved
    raw = path.read_bytes()
    end = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:end])
    refused(path, f"torch.load failed on its {len(raw[:end])} bytes")


def test_the_previous_format_is_refused_as_another_version(saved):
    _, path = saved

    def as_format_1(p):  # what nemon.data/1 wrote: no digest
        p["meta"].pop("sha256")
        p["meta"]["format"] = "nemon.data/1"

    rewrite(path, as_format_1)
    refused(path, f"format 'nemon.data/1', this nemon reads '{PREPARED_FORMAT}'.*another version")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"T": torch.zeros(3, 3)}, "'meta' entry is NoneType"),  # e.g. a model's state dict
        ([torch.zeros(3)], "holds a list, not a dict"),
        ({"meta": {"format": "nemon.model/1"}}, "format 'nemon.model/1'"),
    ],
    ids=["state-dict", "list", "other-format"],
)
def test_another_kind_of_torch_file_is_refused(tmp_path, content, match):
    path = tmp_path / "tiny.pt"
    torch.save(content, path)
    refused(path, match)


def test_a_file_that_is_not_a_torch_file_is_refused(tmp_path):
    path = tmp_path / "tiny.pt"
    path.write_text("model,eps,accuracy\nm0,0.1,0.9\n")
    refused(path, "torch.load failed")


def test_a_missing_file_is_named(tmp_path):
    refused(tmp_path / "absent.pt", "does not exist")


# ------------------------------------------- structural checks (consistent digest, bad content)


@pytest.mark.parametrize(
    ("edit", "resign", "match"),
    [
        # the digest cannot be recomputed over a missing or mistyped field: kept as recorded
        (lambda p: p.pop("test_y"), False, "lacks test_y"),
        (lambda p: p["meta"].pop("std"), False, "lacks meta.std"),
        (lambda p: p["meta"].update(mean="0.5"), False, "wrong type for meta.mean"),
        (lambda p: p.update(train_x=p["train_x"].tolist()), False, "wrong type for train_x"),
        (lambda p: p.update(train_y=p["train_y"] + 5), True, "0..9"),
        (lambda p: p.update(train_x=p["train_x"].float()), True, "uint8"),
        (lambda p: p.update(test_y=p["test_y"][:3]), True, "5 images but test_y holds 3"),
    ],
    ids=["no-key", "no-meta-key", "meta-type", "list", "labels", "dtype", "count"],
)
def test_a_consistently_signed_but_invalid_file_is_refused(saved, edit, resign, match):
    _, path = saved
    rewrite(path, edit, resign=resign)
    refused(path, match)


def test_errors_are_nemon_errors():
    assert issubclass(CorruptFileError, NemonError) and issubclass(CorruptFileError, RuntimeError)


# ----------------------------------------------------------------- real Fashion-MNIST round trip


@pytest.mark.skipif(
    not FASHION_DEBIAN.is_dir(),
    reason=f"{FASHION_DEBIAN} absent (apt-get install dataset-fashion-mnist to run this test)",
)
def test_real_fashion_mnist_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DATASETS_ROOT", FASHION_DEBIAN.parent)
    ds = data.load_dataset("fashion-mnist", progress=False)
    path = tmp_path / "fashion-mnist.pt"
    digest = save_prepared(ds, path)
    back = load_prepared(path, expected_name="fashion-mnist")
    for key in TENSOR_KEYS:
        assert torch.equal(getattr(back, key), getattr(ds, key))
    assert (back.mean, back.std, back.source) == (ds.mean, ds.std, ds.source)
    # the digest is over the content, not the file: independent of torch's zip layout
    assert digest == cache.content_digest(torch.load(path, weights_only=True)["meta"], ds.__dict__)
