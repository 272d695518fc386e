rule evaluate:
    """Inversion-attack and certified accuracy of one model at every attack.eps, full test set."""
    input:
        data="resources/{dataset}.pt",
        model=f"{MODEL_DIR}/model.pt",
    output:
        f"{MODEL_DIR}/robustness.csv",
    log:
        "logs/evaluate/{dataset}/g{gamma}_l{lam}_s{seed}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/g{gamma}_l{lam}_s{seed}.tsv"
    conda:
        "../../environment.yml"
    params:
        eps=config["attack"]["eps"],
        tol=config["attack"]["tol"],
        max_iter=config["attack"]["max_iter"],
        device=config["training"]["device"],
    script:
        "../../scripts/evaluate.py"
