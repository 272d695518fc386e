rule prepare_data:
    """Load the configured data set (checksum-verified) and cache it as tensors."""
    output:
        "resources/{dataset}.pt",
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../../environment.yml"
    params:
        data_dir=config["data_dir"],
    script:
        "../../scripts/prepare_data.py"
