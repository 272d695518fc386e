rule summarise:
    """Validate every model's records; one row per model and per (model, instrument, eps, inputs)."""
    input:
        metrics=all_point_files("metrics.json"),
        evaluation=all_point_files("evaluation.json"),
        robustness=all_point_files("robustness.csv"),
    output:
        summary=report(
            f"{OUT}results/{{dataset}}/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        robustness=report(
            f"{OUT}results/{{dataset}}/robustness.csv",
            caption="../report/robustness.rst",
            category="Tables",
            labels={"table": "robustness"},
        ),
    log:
        f"{OUT}logs/summarise/{{dataset}}.log",
    benchmark:
        f"{OUT}logs/benchmarks/summarise/{{dataset}}.tsv"
    params:
        allow_not_converged=config["evaluation"]["allow_not_converged"],
    script:
        "../../scripts/summarise.py"
