NAME = "compare"
HELP = ("compare trained configurations (default: stock nnU-Net 3d_fullres vs SCNAS 3d_fullres_scnas) from "
        "nnU-Net's per-fold validation/summary.json: Dice table, paired tests and verdicts, FLOPs, time; .md, "
        ".csv and .png")


def add_arguments(parser):
    parser.add_argument("-d", dest="dataset", metavar="DATASET", required=True, help="dataset: id or DatasetXXX_Name")
    parser.add_argument("--method", dest="methods", action="append", metavar="NAME=TRAINER:CONFIGURATION[:PLANS]",
                        help="a method to compare; repeat it; the first is the baseline of the paired tests; a "
                             "CONFIGURATION holding {fold} is one per fold (e.g. 3d_fullres_scnas_fold{fold}); PLANS "
                             "defaults to nnUNetPlans (default: nnU-Net=nnUNetTrainer:3d_fullres "
                             "SCNAS=nnUNetTrainer:3d_fullres_scnas)")
    parser.add_argument("--versus", dest="contrasts", action="append", default=[],
                        metavar="NAME:REFERENCE[,REFERENCE...]",
                        help="a paired contrast besides every method against the baseline; repeat it; several "
                             "references: against the best of them (e.g. SCNAS:random-0,random-1)")
    parser.add_argument("-f", dest="folds", metavar="FOLD", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="folds to compare (default: 0 1 2 3 4)")
    parser.add_argument("-o", dest="output_dir", metavar="OUTPUT_DIR",
                        help="where to write comparison.md/.csv/.png and report.html (default: $nnUNet_results/DATASET/scnas_compare)")


def run(args) -> int:
    # imported here so that `nnunet-scnas --help` does not load nnU-Net and torch
    from nnunet_scnas.nnunet.compare.comparison import DEFAULT_METHODS, Contrast, compare
    from nnunet_scnas.nnunet.compare.report import terminal_summary
    from nnunet_scnas.nnunet.compare.results import Method

    methods = [Method.parse(spec) for spec in args.methods] if args.methods else DEFAULT_METHODS
    contrasts = [Contrast.parse(spec) for spec in args.contrasts]
    print(terminal_summary(compare(args.dataset, methods, args.folds, args.output_dir, contrasts)))
    return 0
