"""`nnunet-scnas make-dataset NAME`: write an embedded synthetic dataset in nnU-Net's raw format."""
import argparse
import os
import time

NAME = "make-dataset"
HELP = "write a synthetic dataset (brain-tumour MRI or lung-nodule CT) in nnU-Net's raw format"


def add_arguments(parser):
    from nnunet_scnas.nnunet.datasets import DATASETS  # the registry is light: no numpy, no SimpleITK

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "datasets:\n" + "\n".join(
        f"  {spec.name:<12} {spec.description}\n  {'':<12} default: {spec.folder_name()}, "
        f"{spec.default_cases} training + {spec.default_test_cases} test cases, size {spec.default_size}"
        + (f"\n  {'':<12} --regions: {spec.folder_name(regions=True)}" if spec.regions_dataset_id else "")
        for spec in DATASETS.values())
    parser.add_argument("name", metavar="NAME", help=f"which dataset: {', '.join(DATASETS)} (described below)")
    parser.add_argument("--cases", type=int, default=None, help="training cases (default: per dataset, below)")
    parser.add_argument("--test-cases", type=int, default=None,
                        help="held-out cases in imagesTs/labelsTs (default: per dataset, below)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data (default 0)")
    parser.add_argument("--size", type=int, default=None,
                        help="voxels along the longest axis of a typical case (default: per dataset, below)")
    parser.add_argument("--id", type=int, default=None, dest="dataset_id",
                        help="nnU-Net dataset id (default: per dataset, below)")
    parser.add_argument("--out", default=None,
                        help="the nnU-Net raw folder to write into (default: $nnUNet_raw)")
    parser.add_argument("--regions", action="store_true",
                        help="braintumour only: BraTS-style regions in dataset.json (whole tumour, tumour core, "
                             "enhancing tumour; nnU-Net's region-based training), the same images")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset folder of the same name")


def run(args) -> int:
    from nnunet_scnas.nnunet.datasets import DATASETS, make_dataset

    raw = os.environ.get("nnUNet_raw")
    out = args.out if args.out is not None else raw
    start = time.perf_counter()
    folder = make_dataset(args.name, out, cases=args.cases, seed=args.seed, size=args.size,
                          test_cases=args.test_cases, dataset_id=args.dataset_id, force=args.force,
                          progress=lambda line: print(line, flush=True), regions=args.regions)
    print(f"wrote {folder} in {time.perf_counter() - start:.1f} s")
    dataset_id = DATASETS[args.name].default_id(args.regions) if args.dataset_id is None else args.dataset_id
    # nnU-Net finds the dataset through nnUNet_raw, so say so when the data went elsewhere
    found_by_nnunet = raw is not None and os.path.isdir(raw) and os.path.samefile(raw, folder.parent)
    prefix = "" if found_by_nnunet else f"nnUNet_raw={folder.parent} "
    print(f"next: {prefix}nnUNetv2_plan_and_preprocess -d {dataset_id} -c 3d_fullres --verify_dataset_integrity")
    return 0
