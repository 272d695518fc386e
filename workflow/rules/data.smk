rule prepare_data:
    """Load the configured data set (checksum-verified) and cache it as hashed tensors."""
    output:
        "resources/{dataset}.pt",
    log:
        f"{OUT}logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{OUT}logs/benchmarks/prepare_data/{{dataset}}.tsv"
    params:
        data_dir=config["data_dir"],
    script:
        "../../scripts/prepare_data.py"
