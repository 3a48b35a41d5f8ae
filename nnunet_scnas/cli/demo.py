NAME = "demo"
HELP = "run the whole method on the embedded data: search, export, retrain vs stock nnU-Net, compare, transfer"


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes on 2 CPU cores (tiny budgets: checks that everything runs, "
                             "numbers mean nothing)")
    parser.add_argument("--workdir", default="scnas_demo",
                        help="folder for nnU-Net's raw/preprocessed/results folders of the demo "
                             "(default: ./scnas_demo); re-running with the same settings resumes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for nnU-Net (default cpu)")
    parser.add_argument("--force", action="store_true", help="delete the working folder's earlier demo run first")


def run(args) -> int:
    from nnunet_scnas.nnunet.demo import Demo

    Demo(args.workdir, quick=args.quick, device=args.device, force=args.force).run()
    return 0
