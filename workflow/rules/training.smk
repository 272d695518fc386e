# One rule per (model, objective) of the config; a job trains every weight (lam or eps_t) of
# one (gamma, seed) together as a stack and writes each model's files (nemon.contracts).
for _suffix, _exp in EXPERIMENTS.items():
    forward_runtime_settings("train", f"train_{_suffix}")

    rule:
        name:
            f"train_{_suffix}"
        input:
            data=rules.prepare_data.output[0],
        output:
            model=point_files(_exp, "model.pt"),
            metrics=point_files(_exp, "metrics.json"),
        log:
            f"{OUT}logs/train/{{dataset}}/{_exp['model']}/{_exp['objective']}/g{{gamma}}_s{{seed}}.log",
        benchmark:
            f"{OUT}logs/benchmarks/train/{{dataset}}/{_exp['model']}/{_exp['objective']}/g{{gamma}}_s{{seed}}.tsv"
        priority: priority_of("train", _exp)
        params:
            model=_exp["model"],
            objective=_exp["objective"],
            weights=[float(w) for w in _exp[OBJECTIVE_AXIS[_exp["objective"]][0]]],
            checkpoint=f"{group_dir(_exp)}/g{{gamma}}_s{{seed}}.checkpoint.pt",
            hidden=config["model"]["hidden"],
            training=config["training"],
            device=config["device"],
        script:
            "../../scripts/train.py"
