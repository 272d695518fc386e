# One rule per experiment (train_<experiment>); a job trains every weight (lam or eps_t) of one
# (gamma, seed) together as a stack and writes each model's files (nemon.contracts), with the
# experiment's width, epochs and schedule (nemon.training.train_group).
for _name, _exp in EXPERIMENTS.items():

    rule:
        name:
            rule_name("train", _name)
        input:
            data=rules.prepare_data.output[0],
        output:
            model=point_files(_name, _exp, "model.pt"),
            metrics=point_files(_name, _exp, "metrics.json"),
        log:
            f"{OUT}logs/train/{{dataset}}/{_name}/g{{gamma}}_s{{seed}}.log",
        benchmark:
            f"{OUT}logs/benchmarks/train/{{dataset}}/{_name}/g{{gamma}}_s{{seed}}.tsv"
        priority: priority_of("train", _exp)
        threads: generic_threads("train")
        resources:
            **generic_resources("train"),
        params:
            experiment=_name,
            model=_exp["model"],
            objective=_exp["objective"],
            weights=weights_of(_exp),
            checkpoint=f"{group_dir(_name)}/g{{gamma}}_s{{seed}}.checkpoint.pt",
            hidden=_exp["hidden"],
            training=experiment_training(config, _name),
            device=config["device"],
        script:
            "../../scripts/train.py"
