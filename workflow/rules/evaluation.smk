# The evaluation stage (nemon.evaluation): every attack and certificate on every model of a
# training group, one rule per experiment (evaluate_<experiment>). It reads no training key:
# changing `evaluation:` never retrains a model.
for _name, _exp in EXPERIMENTS.items():
    _train = getattr(rules, rule_name("train", _name))

    rule:
        name:
            rule_name("evaluate", _name)
        input:
            data=rules.prepare_data.output[0],
            model=_train.output.model,
            metrics=_train.output.metrics,
        output:
            robustness=point_files(_name, _exp, "robustness.csv"),
            evaluation=point_files(_name, _exp, "evaluation.json"),
        log:
            f"{OUT}logs/evaluate/{{dataset}}/{_name}/g{{gamma}}_s{{seed}}.log",
        benchmark:
            f"{OUT}logs/benchmarks/evaluate/{{dataset}}/{_name}/g{{gamma}}_s{{seed}}.tsv"
        priority: priority_of("evaluate", _exp)
        threads: generic_threads("evaluate")
        resources:
            **generic_resources("evaluate"),
        params:
            experiment=_name,
            model=_exp["model"],
            objective=_exp["objective"],
            weights=weights_of(_exp),
            evaluation=config["evaluation"],
            device=config["device"],
            # the models evaluated so far, kept until the job ends (not an output, so an
            # interrupted job keeps it): a rerun skips them (nemon.evaluation.PartialEvaluation)
            partial=f"{group_dir(_name)}/g{{gamma}}_s{{seed}}.evaluation-partial.json",
        script:
            "../../scripts/evaluate.py"
