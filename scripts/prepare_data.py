"""Rule prepare_data: load the data set named by the wildcard and cache it as tensors.

Fails with nemon's DatasetError (its message in the log) when the files cannot be obtained;
another data set is never substituted. The cache records a content digest that every reader
checks (nemon.cache.load_prepared).
"""

import sys

from nemon.cache import save_prepared
from nemon.data import load_dataset

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

ds = load_dataset(smk.wildcards.dataset, data_dir=smk.params.data_dir)
print(
    f"{ds.name}: {len(ds.train_y)} training and {len(ds.test_y)} test images from {ds.source}; "
    f"training pixel mean {ds.mean:.6f}, std {ds.std:.6f}"
)
digest = save_prepared(ds, smk.output[0])
print(f"wrote {smk.output[0]} (content sha256 {digest})")
