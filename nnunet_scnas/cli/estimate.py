"""`nnunet-scnas estimate -d DATASET [--time] [--cost]`: peak training memory of stock nnU-Net, the search and the
derived network; with --time, seconds per iteration on this machine and the hours of the default schedules; with
--cost, the cost table of a cost-aware search."""
NAME = "estimate"
HELP = ("estimate the peak GPU memory of training at a dataset's plan (stock nnU-Net, the search without and with "
        "checkpointed cells, the derived network of an exported configuration), before training anything")


def add_arguments(parser):
    parser.add_argument("-d", dest="dataset", metavar="DATASET", required=True, help="dataset: id or DatasetXXX_Name")
    parser.add_argument("-c", dest="configuration", metavar="CONFIGURATION", default="3d_fullres",
                        help="configuration (default 3d_fullres); an exported one (e.g. 3d_fullres_scnas) adds its "
                             "derived network, and the stock rows use the configuration it inherits from")
    parser.add_argument("-tr", dest="trainer", metavar="TRAINER", default="nnUNetTrainerSCNASSearch",
                        help="search trainer whose stem width and seed to use (default nnUNetTrainerSCNASSearch)")
    parser.add_argument("-p", dest="plans", metavar="PLANS", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="batch per GPU (default: the plan's; with -num_gpus G nnU-Net gives each GPU 1/G of it)")
    parser.add_argument("--stem-width", type=int, metavar="C", help="stem width of the search (default: the trainer's)")
    parser.add_argument("--time", action="store_true",
                        help="also time a few real iterations on this machine's GPU (the CPU if there is none) and "
                             "print seconds per iteration and the hours of the default schedules (search; one and "
                             "five retraining folds)")
    parser.add_argument("--cost", action="store_true",
                        help="also measure and print the cost table of a cost-aware search at the plan (each op's "
                             "training memory, seconds on this machine's GPU or CPU, and FLOPs; the cheapest "
                             "architecture's memory and time against stock nnU-Net's), in the memory mode of -tr's "
                             "cost_memory_mode")
    parser.add_argument("--fp32", action="store_true",
                        help="float32 throughout, as nnU-Net trains on the CPU (default: CUDA autocast's dtypes)")


def run(args) -> int:
    from nnunet_scnas.nnunet.memory_estimate import estimate_plan, resolve_plan

    estimate = estimate_plan(args.dataset, args.configuration, args.trainer, args.batch_size, args.stem_width,
                             args.plans, autocast=not args.fp32)
    print(estimate.table(), flush=True)
    if args.time:
        from nnunet_scnas.nnunet.time_estimate import time_plan

        plan = resolve_plan(args.dataset, args.configuration, args.trainer, args.batch_size, args.stem_width,
                            args.plans)
        for line in time_plan(plan, estimate):
            print(line, flush=True)
    if args.cost:
        from nnunet_scnas.nnunet.search.cost import describe_table, plan_cost_table

        plan = resolve_plan(args.dataset, args.configuration, args.trainer, args.batch_size, args.stem_width,
                            args.plans)
        for line in describe_table(plan_cost_table(plan)):
            print(line, flush=True)
    return 0
