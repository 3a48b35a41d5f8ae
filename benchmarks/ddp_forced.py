"""nnU-Net's multi-GPU (DDP) training path, forced for any number of GPUs, one included.

`nnUNetv2_train ... -num_gpus N` takes nnU-Net's DDP path only for N > 1. This script runs that very path -
nnU-Net's own `run_ddp` under `torch.multiprocessing.spawn`, NCCL, one process per GPU, exactly as
`run_training` launches it - for any N >= 1, so that a one-GPU machine checks what a multi-GPU run does: the
search trainer wrapped for unused parameters, and stock `nnUNetTrainer` retraining an exported configuration
under plain DDP (which fails if a parameter of the derived network gets no gradient).

    python benchmarks/ddp_forced.py 901 3d_fullres 0 -tr nnUNetTrainerSCNASSearch_5epochs --num-gpus 1
    python benchmarks/ddp_forced.py 901 3d_fullres_scnas 0 -tr nnUNetTrainer_5epochs --num-gpus 1

Needs CUDA and nnU-Net's three path variables; prints nnU-Net's usual log.
"""
import argparse
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("fold", type=int)
    parser.add_argument("-tr", "--trainer", default="nnUNetTrainer")
    parser.add_argument("-p", "--plans", default="nnUNetPlans")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--c", action="store_true", help="continue from the latest checkpoint")
    args = parser.parse_args()

    import torch
    import torch.multiprocessing as mp
    from nnunetv2.run.run_training import find_free_network_port, run_ddp
    if torch.cuda.device_count() < args.num_gpus:
        raise SystemExit(f"--num-gpus {args.num_gpus}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ.setdefault("MASTER_PORT", str(find_free_network_port()))
    # run_ddp(rank, dataset, configuration, fold, trainer, plans, disable_checkpointing, continue, only_validate,
    #         pretrained_weights, export_probabilities, validate_with_best, world_size), as run_training calls it
    mp.spawn(run_ddp, args=(args.dataset, args.configuration, args.fold, args.trainer, args.plans, False, args.c,
                            False, None, False, False, args.num_gpus), nprocs=args.num_gpus, join=True)


if __name__ == "__main__":
    main()
