rule plot_pareto:
    """Pareto fronts: clean accuracy against PGD, certified and inversion accuracy."""
    input:
        summary=rules.summarise.output.summary,
        robustness=rules.summarise.output.robustness,
    output:
        pdf=f"{OUT}figures/{{dataset}}/pareto.pdf",
        png=report(
            f"{OUT}figures/{{dataset}}/pareto.png",
            caption="../report/pareto.rst",
            category="Figures",
            labels={"figure": "Pareto fronts"},
        ),
    log:
        f"{OUT}logs/plot_pareto/{{dataset}}.log",
    benchmark:
        f"{OUT}logs/benchmarks/plot_pareto/{{dataset}}.tsv"
    params:
        eps=config["figures"]["pareto_eps"],
        inversion_eps=config["figures"]["inversion_pareto_eps"],
    script:
        "../../scripts/plot_pareto.py"


rule plot_accuracy_vs_eps:
    """Accuracy against eps for every attack and certificate, seeds as mean and band."""
    input:
        robustness=rules.summarise.output.robustness,
    output:
        pdf=f"{OUT}figures/{{dataset}}/accuracy_vs_eps.pdf",
        png=report(
            f"{OUT}figures/{{dataset}}/accuracy_vs_eps.png",
            caption="../report/accuracy_vs_eps.rst",
            category="Figures",
            labels={"figure": "accuracy vs eps"},
        ),
    log:
        f"{OUT}logs/plot_accuracy_vs_eps/{{dataset}}.log",
    benchmark:
        f"{OUT}logs/benchmarks/plot_accuracy_vs_eps/{{dataset}}.tsv"
    script:
        "../../scripts/plot_accuracy_vs_eps.py"


rule plot_lipschitz:
    """The Lipschitz bound and its tightness (bound / empirical lower bound) against lam."""
    input:
        summary=rules.summarise.output.summary,
    output:
        pdf=f"{OUT}figures/{{dataset}}/lipschitz.pdf",
        png=report(
            f"{OUT}figures/{{dataset}}/lipschitz.png",
            caption="../report/lipschitz.rst",
            category="Figures",
            labels={"figure": "Lipschitz bound and tightness"},
        ),
    log:
        f"{OUT}logs/plot_lipschitz/{{dataset}}.log",
    benchmark:
        f"{OUT}logs/benchmarks/plot_lipschitz/{{dataset}}.tsv"
    script:
        "../../scripts/plot_lipschitz.py"
