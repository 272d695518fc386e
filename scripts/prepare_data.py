"""Rule prepare_data: load the data set named by the wildcard and cache it as tensors.

Fails when the files cannot be obtained, with nemon's DatasetError message alone as the log's
last line (`error: ...`, which the workflow repeats at the end of the run) rather than a chained
traceback; another data set is never substituted. The cache records a content digest that every
reader checks (nemon.cache.load_prepared).
"""

import sys

from nemon.cache import save_prepared
from nemon.data import load_dataset
from nemon.errors import DatasetError
from nemon.progress import stop_on_signals

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)
stop_on_signals(lambda signal: f"stopped by {signal}: a rerun prepares the data set again")

try:
    ds = load_dataset(smk.wildcards.dataset, data_dir=smk.params.data_dir)
except DatasetError as e:
    sys.exit(f"error: {e}")  # the message, not a traceback (the workflow's onerror reads it)
print(
    f"{ds.name}: {len(ds.train_y)} training and {len(ds.test_y)} test images from {ds.source}; "
    f"training pixel mean {ds.mean:.6f}, std {ds.std:.6f}"
)
digest = save_prepared(ds, smk.output[0])
print(f"wrote {smk.output[0]} (content sha256 {digest})")
