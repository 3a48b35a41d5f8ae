"""The search trainer's settings: the class attributes its variants change (`nnUNetTrainerSCNASSearch_variants.py`).

Paper §2.2 and §3 for the search's own hyperparameters; `ranking.py` and `cost.py` check theirs when the trainer
is made, so a variant with a bad value fails in one line before anything is trained.
"""
from nnunet_scnas.sampler import TAU_END, TAU_START


class SearchSettings:
    """Mixed into `nnUNetTrainerSCNASSearch` before nnU-Net's trainer; variants override these, never the
    constructor."""
    search_epochs = 200
    search_iterations_per_epoch = 250
    search_val_iterations_per_epoch = 20
    stem_width = 48
    weight_lr = 0.025
    weight_betas = (0.1, 0.001)  # as printed in the paper
    arch_lr = 3e-3
    arch_betas = (0.5, 0.999)
    arch_lr_poly = False  # True: the architecture lr decays over the epochs that train it (`TemperatureSchedule`)
    plateau_patience = 20  # epochs without a lower training loss before the weight LR is multiplied by 0.1
    plateau_factor = 0.1
    tau_start = TAU_START
    tau_end = TAU_END
    search_seed = 12345  # the 4:1 split, the initial supernet, the architecture samples and the data streams
    grad_clip = 12.0  # nnU-Net's own clipping norm
    memory_mode = "auto"  # plain / lean / cells, or "auto": on CUDA the fastest whose worst case fits (macro.py)
    search_loss = "nnunet"  # nnU-Net's Dice + CE, or "jaccard": the soft Jaccard loss of the paper's §3
    ranking_random_genotypes = 20  # the end-of-search ranking check against random genotypes; 0: no check
    ranking_batches = 5  # architecture-set batches each genotype of the check is evaluated on
    # the cost term (`cost.py`); cost_weight 0 is today's search exactly
    cost_weight = 0.0  # weight of relu(memory excess) + relu(time excess) in the architecture loss
    memory_budget = 1.0  # the exported (FLOPs-matched) network trains in at most this x stock nnU-Net's memory
    time_budget = 1.0  # ... and seconds per iteration; None switches a term off
    warmup_fraction = 0.0  # the first share of the epochs trains the weights alone (tau held at tau_start)
    cost_ramp_epochs = 0  # then the cost weight rises linearly over this many epochs
    cost_memory_mode = "auto"  # the mode the table's memory is estimated in: auto = lean on CUDA, plain elsewhere
