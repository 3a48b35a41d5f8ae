"""The adapter: everything that speaks nnU-Net, one subpackage per stage of the data flow.

    datasets/       the embedded synthetic datasets, written in nnU-Net's raw format
    plans.py        a dataset's plans, read with one clear error each; the network a configuration names
    plan_strides.py an nnU-Net plan -> the SCNAS macro's strides (and its deep-supervision scales)
    memory_estimate.py  peak training memory at a plan, before training (`estimate`, checkpointing choice)
    search/         the search trainer's logic: 4:1 split, optimizers and state, the bi-level step,
                    checkpoints, the report (genotype.json, alpha history, plots, cell drawings)
    export/         a genotype -> a plans configuration whose network is the derived network
    training/       what retraining recipes add to nnU-Net's: losses, LR rules, CPU memory layout,
                    checkpointed cells
    compare/        trained folds -> tables, paired tests, plots
    demo.py         the whole chain on the embedded data, through nnU-Net's own commands
    commands.py     running nnU-Net's console commands as a user would

Nothing here imports the CLI (`nnunet_scnas.cli`), which sits on top.
"""
