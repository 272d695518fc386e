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


rule present:
    """The results README (every table, generated) and the report's first page."""
    input:
        summary=rules.summarise.output.summary,
        robustness=rules.summarise.output.robustness,
        pareto=f"{OUT}figures/{{dataset}}/pareto.png",
    output:
        readme=f"{OUT}results/{{dataset}}/README.md",
        front=f"{OUT}results/{{dataset}}/front-page.html",
    log:
        f"{OUT}logs/present/{{dataset}}.log",
    benchmark:
        f"{OUT}logs/benchmarks/present/{{dataset}}.tsv"
    script:
        "../../scripts/present.py"
