# The evaluation stage (nemon.evaluation): every attack and certificate on every model of a
# training group. It reads no training key: changing `evaluation:` never retrains a model.
for _suffix, _exp in EXPERIMENTS.items():
    forward_runtime_settings("evaluate", f"evaluate_{_suffix}")

    rule:
        name:
            f"evaluate_{_suffix}"
        input:
            data=rules.prepare_data.output[0],
            model=getattr(rules, f"train_{_suffix}").output.model,
            metrics=getattr(rules, f"train_{_suffix}").output.metrics,
        output:
            robustness=point_files(_exp, "robustness.csv"),
            evaluation=point_files(_exp, "evaluation.json"),
        log:
            f"{OUT}logs/evaluate/{{dataset}}/{_exp['model']}/{_exp['objective']}/g{{gamma}}_s{{seed}}.log",
        benchmark:
            f"{OUT}logs/benchmarks/evaluate/{{dataset}}/{_exp['model']}/{_exp['objective']}/g{{gamma}}_s{{seed}}.tsv"
        priority: priority_of("evaluate", _exp)
        params:
            model=_exp["model"],
            objective=_exp["objective"],
            weights=[float(w) for w in _exp[OBJECTIVE_AXIS[_exp["objective"]][0]]],
            evaluation=config["evaluation"],
            device=config["device"],
            # the models evaluated so far, kept until the job ends (not an output, so an
            # interrupted job keeps it): a rerun skips them (nemon.evaluation.PartialEvaluation)
            partial=f"{group_dir(_exp)}/g{{gamma}}_s{{seed}}.evaluation-partial.json",
        script:
            "../../scripts/evaluate.py"
