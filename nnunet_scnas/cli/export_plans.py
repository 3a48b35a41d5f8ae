import argparse

NAME = "export-plans"
HELP = ("add a configuration whose network is a genotype's derived network to a dataset's nnU-Net plans, "
        "so that stock nnUNetv2_train / nnUNetv2_predict use it")


def width_argument(value: str):
    """`auto` or a stem width (argparse turns the error into one line and exit code 2)."""
    from nnunet_scnas.macro import check_stem_width

    if value == "auto":
        return value
    try:
        width = int(value)
    except ValueError:
        width = value  # refused below, with the value as given
    try:
        return check_stem_width(width)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a stem width: {error}") from None


def add_arguments(parser):
    parser.add_argument("-d", dest="dataset", metavar="DATASET", required=True,
                        help="target dataset: id or DatasetXXX_Name")
    parser.add_argument("-g", dest="genotype", metavar="GENOTYPE_JSON", required=True,
                        help="genotype JSON: a search fold's genotype.json, a file of plans/, or a shipped name "
                             "such as plain_unet; or random:SEED, a random architecture of the search space (the "
                             "baseline a search has to beat)")
    parser.add_argument("-c", dest="source", metavar="CONFIGURATION", default="3d_fullres",
                        help="configuration to inherit from (preprocessed data, patch size, ...); default 3d_fullres")
    parser.add_argument("-o", dest="target", metavar="NEW_CONFIGURATION", default="3d_fullres_scnas",
                        help="name of the new configuration; default 3d_fullres_scnas")
    parser.add_argument("-p", dest="plans", metavar="PLANS", default="nnUNetPlans",
                        help="plans identifier; default nnUNetPlans")
    parser.add_argument("--width", type=width_argument, metavar="auto|N", default="auto",
                        help="stem width of the derived network (a multiple of 4), or 'auto' (default): the width "
                             "that matches nnU-Net's own network of the source configuration (see --match)")
    parser.add_argument("--match", choices=("flops", "memory"), default="flops",
                        help="what --width auto matches: 'flops' (default, the paper's rule) or 'memory', the "
                             "estimated GPU memory of training at the plan's batch (the rule of 'nnU-Net "
                             "Revisited', MICCAI 2024: compare at equal training VRAM)")
    parser.add_argument("--memory", choices=("auto", "plain", "lean", "cells"), default="auto",
                        help="what training keeps for the backward pass, recorded in the configuration: 'plain' "
                             "(fastest), 'lean' (recomputes the cheap ops: norms, activations, pools, depthwise and "
                             "1x1x1 convs; a fraction of the memory for a little more time), 'cells' (recomputes "
                             "whole cells: the least memory, the most time), or 'auto' (default): on a GPU the "
                             "fastest mode whose estimate fits its free memory when nnU-Net builds the network, "
                             "plain elsewhere; the same network and function in every mode. --match memory "
                             "matches in the mode given, lean for auto")
    parser.add_argument("--force", action="store_true", help="replace an existing configuration of that name")


def run(args) -> int:
    from nnunet_scnas.nnunet.export.plans_export import export_plans

    done = export_plans(args.dataset, args.genotype, source=args.source, target=args.target,
                        plans_name=args.plans, width=args.width, force=args.force, match=args.match,
                        memory_mode=args.memory)
    print(done.summary())
    return 0
