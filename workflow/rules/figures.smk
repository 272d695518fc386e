rule plot_pareto:
    """Clean accuracy against inversion accuracy at figures.pareto_eps, with the Pareto front."""
    input:
        summary="results/{dataset}/summary.csv",
        robustness="results/{dataset}/robustness.csv",
    output:
        pdf="figures/{dataset}/pareto.pdf",
        png=report(
            "figures/{dataset}/pareto.png",
            caption="../report/pareto.rst",
            category="Figures",
            labels={"figure": "Pareto front"},
        ),
    log:
        "logs/plot_pareto/{dataset}.log",
    benchmark:
        "benchmarks/plot_pareto/{dataset}.tsv"
    conda:
        "../../environment.yml"
    params:
        eps=config["figures"]["pareto_eps"],
    script:
        "../../scripts/plot_pareto.py"


rule plot_accuracy_vs_eps:
    """Accuracy against eps, one curve per model: inversion attack solid, certified dashed."""
    input:
        robustness="results/{dataset}/robustness.csv",
    output:
        pdf="figures/{dataset}/accuracy_vs_eps.pdf",
        png=report(
            "figures/{dataset}/accuracy_vs_eps.png",
            caption="../report/accuracy_vs_eps.rst",
            category="Figures",
            labels={"figure": "accuracy vs eps"},
        ),
    log:
        "logs/plot_accuracy_vs_eps/{dataset}.log",
    benchmark:
        "benchmarks/plot_accuracy_vs_eps/{dataset}.tsv"
    conda:
        "../../environment.yml"
    script:
        "../../scripts/plot_accuracy_vs_eps.py"


rule plot_lipschitz_vs_lambda:
    """Lipschitz bound of each trained model against the regularisation weight lam."""
    input:
        summary="results/{dataset}/summary.csv",
    output:
        pdf="figures/{dataset}/lipschitz_vs_lambda.pdf",
        png=report(
            "figures/{dataset}/lipschitz_vs_lambda.png",
            caption="../report/lipschitz_vs_lambda.rst",
            category="Figures",
            labels={"figure": "Lipschitz bound vs lambda"},
        ),
    log:
        "logs/plot_lipschitz_vs_lambda/{dataset}.log",
    benchmark:
        "benchmarks/plot_lipschitz_vs_lambda/{dataset}.tsv"
    conda:
        "../../environment.yml"
    script:
        "../../scripts/plot_lipschitz_vs_lambda.py"
