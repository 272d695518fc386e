rule train:
    """Train one model of the grid: loss = CE + lam * Lipschitz bound, mu_eta(A) <= gamma."""
    input:
        data="resources/{dataset}.pt",
    output:
        model=f"{MODEL_DIR}/model.pt",
        metrics=f"{MODEL_DIR}/metrics.json",
    log:
        "logs/train/{dataset}/g{gamma}_l{lam}_s{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/g{gamma}_l{lam}_s{seed}.tsv"
    conda:
        "../../environment.yml"
    params:
        point=point_config,
    script:
        "../../scripts/train.py"
