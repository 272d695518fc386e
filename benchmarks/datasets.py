"""The benchmark's data: Fashion-MNIST (Debian files) when present, else synthetic images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nemon import data as data_mod
from nemon.errors import ConfigurationError

from .config import DATA_CHOICES, IN_FEATURES


def fashion_available() -> bool:
    """Whether Debian's Fashion-MNIST files are where :func:`nemon.data.load_dataset` looks."""
    return (data_mod.DEBIAN_DATASETS_ROOT / "fashion-mnist").is_dir()


def synthetic_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` 28x28 uint8 images (flattened) of ten classes, about as hard as Fashion-MNIST.

    Each image is its class's fixed blob template blended with a random other
    class's template (weight up to 0.6, so some images are ambiguous) plus
    uniform noise; a NEMON reaches about 85 % test accuracy after one epoch.
    """
    g = torch.Generator().manual_seed(seed)
    proto_g = torch.Generator().manual_seed(12345)  # the same classes for train and test
    protos = (torch.rand(10, 1, 7, 7, generator=proto_g) > 0.55).float()
    protos = F.interpolate(protos, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    labels = torch.randint(0, 10, (n,), generator=g)
    x = torch.empty(n, 28, 28, dtype=torch.uint8)
    for i in range(0, n, 10_000):  # chunks keep the float temporaries small
        lab = labels[i : i + 10_000]
        k = len(lab)
        other = torch.randint(0, 10, (k,), generator=g)
        w = 0.6 * torch.rand(k, 1, 1, generator=g)
        noise = 0.5 * torch.rand(k, 28, 28, generator=g)
        img = ((1 - w) * protos[lab] + w * protos[other] + noise).clamp_(0, 1)
        x[i : i + k] = img.mul_(255).round_().to(torch.uint8)
    return x.reshape(n, -1), labels


@dataclass
class BenchData:
    """Images as uint8 rows ``(N, 784)`` and their labels; ``mean``/``std`` in [0, 1] units."""

    name: str  # what the table says the data were
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: float  # training pixel statistics, folded into the model's input map (MATH 1)
    std: float


def load_bench_data(data: str, samples: int, test_samples: int, seed: int) -> BenchData:
    """The first ``samples`` training and ``test_samples`` test images of ``data``."""
    if data not in DATA_CHOICES:
        raise ConfigurationError(f"--data must be one of {list(DATA_CHOICES)}, got {data!r}")
    if data == "fashion-mnist" or (data == "auto" and fashion_available()):
        ds = data_mod.load_dataset("fashion-mnist", progress=False)  # checksum-verified
        tx, ty = ds.train_x.reshape(-1, IN_FEATURES), ds.train_y
        vx, vy = ds.test_x.reshape(-1, IN_FEATURES), ds.test_y
        if samples > len(tx) or test_samples > len(vx):
            raise ConfigurationError(
                f"Fashion-MNIST has {len(tx)} training and {len(vx)} test images, asked for "
                f"--samples {samples} and --test-samples {test_samples}; lower them"
            )
        tx, ty, vx, vy = tx[:samples], ty[:samples], vx[:test_samples], vy[:test_samples]
        name = f"Fashion-MNIST ({ds.source})"
    else:
        tx, ty = synthetic_images(samples, seed)
        vx, vy = synthetic_images(test_samples, seed + 1)
        name = "synthetic (10 blended blob classes, Fashion-MNIST shape)"
    mean, std = data_mod.pixel_stats(tx)
    return BenchData(name, tx.contiguous(), ty, vx.contiguous(), vy, mean, std)
