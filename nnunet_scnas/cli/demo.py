NAME = "demo"
HELP = ("run the whole method on the embedded data: search, export, retrain vs stock nnU-Net and random "
        "architectures, compare; with --transfer, the transfer to a CT-like set")


def add_arguments(parser):
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="a few minutes on 2 CPU cores (tiny budgets: checks that everything runs, numbers mean "
                           "nothing)")
    size.add_argument("--full", action="store_true",
                      help="the benchmark: a search per fold on all 5 folds, two random architectures, two search "
                           "variants on fold 0, the transfer on 5 folds; a few hours on 2 CPU cores, resumable")
    parser.add_argument("--transfer", action="store_true",
                        help="also the transfer: fold 0's genotype trained on the CT-like set beside stock nnU-Net "
                             "and a random architecture (20 more minutes on 2 CPU cores; in a finished demo's folder it adds "
                             "only these stages; --quick and --full always include it)")
    parser.add_argument("--workdir", default=None,
                        help="folder for nnU-Net's raw/preprocessed/results folders of the demo "
                             "(default: ./scnas_demo, with --full ./scnas_benchmark); re-running with the same "
                             "settings resumes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for nnU-Net (default cpu)")
    parser.add_argument("--force", action="store_true", help="delete the working folder's earlier demo run first")


def run(args) -> int:
    from nnunet_scnas.nnunet.demo import Demo

    profile = "quick" if args.quick else "full" if args.full else "default"
    workdir = args.workdir or ("scnas_benchmark" if args.full else "scnas_demo")
    Demo(workdir, profile=profile, device=args.device, force=args.force, transfer=args.transfer).run()
    return 0
