rule summarise:
    """One row per model (summary.csv) and per (model, attack, eps) (robustness.csv)."""
    input:
        metrics=model_files("metrics.json"),
        robustness=model_files("robustness.csv"),
    output:
        summary=report(
            "results/{dataset}/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        robustness=report(
            "results/{dataset}/robustness.csv",
            caption="../report/robustness.rst",
            category="Tables",
            labels={"table": "robustness"},
        ),
    log:
        "logs/summarise/{dataset}.log",
    benchmark:
        "benchmarks/summarise/{dataset}.tsv"
    conda:
        "../../environment.yml"
    script:
        "../../scripts/summarise.py"
