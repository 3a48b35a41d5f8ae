"""Memory of the search at nnU-Net's BrainTumour plan, before and after the paper's cell layout and the savers;
how the estimate compares with measurements; the cost of checkpointed cells; the FLOPs-matched width at 128^3.

1. Estimates (`nnunet_scnas/memory.py`, meta device, CUDA autocast dtypes) at BrainTumour's plan (128^3, 4
   channels, 4 outputs, batch 1 and 2, stem 48) for: the old layout (nodes as wide as the cell, projected
   concat: the core of commit OLD_LAYOUT_COMMIT, traced in a subprocess), nodes of C/4, C/4 + the savers,
   C/4 + savers + checkpointed cells; and stock PlainConvUNet at nnU-Net's BrainTumour plan, for scale.
   Also the float32 bytes alive after one two-op forward (the saved tensors), old layout vs C/4 + savers.
2. Calibration: the old layout at batch 1 against the one GPU measurement (H100, max_memory_allocated,
   `trainer_cost_cuda_128_batch1.json`).
3. CPU, small patch, each case in a fresh process: a real search step's peak RSS above the RSS before it, the
   peak of its live tensor bytes (sampled after every op), and the estimate; step time with and without
   checkpointed cells, interleaved in one process.
4. FLOPs matching at 128^3: `export-plans --width auto` on a plans file holding nnU-Net's BrainTumour
   3d_fullres plan, for the shipped genotypes and for 20 random argmax genotypes.

    python benchmarks/search_memory.py          # about 3 minutes on 2 CPU cores; writes search_memory.md/.json
"""
import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from search_cost import machine  # noqa: E402

OLD_LAYOUT_COMMIT = "e7d8239"  # the last commit whose cells have nodes as wide as the cell
GIB = 2 ** 30
STRIDES_128 = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
BRAIN_TUMOUR = {"patch": [128, 128, 128], "input_channels": 4, "num_classes": 4}  # MSD Task01: 3 labels + background
# nnU-Net v2's 3d_fullres network for MSD BrainTumour (its planner's output for a 128^3 patch)
BRAIN_TUMOUR_ARCH = {
    "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320], "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 6, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
    "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
MEASURED_OLD_LAYOUT = HERE / "trainer_cost_cuda_128_batch1.json"

# A search estimate in any version of the package on sys.path (the old core gets today's memory.py beside it).
ESTIMATE_SCRIPT = """
import json, sys, numpy as np, torch
from nnunet_scnas.supernet import SCNASSupernet
from nnunet_scnas.search_memory import search_memory
batch, stem, savers, checkpointed, autocast = json.loads(sys.argv[1])
def seed_from(*key):
    return int(np.random.SeedSequence(key).generate_state(1)[0])
generators = [torch.Generator().manual_seed(seed_from(12345, it, step)) for it in range(2) for step in (0, 1)]
with torch.device("meta"):
    net = SCNASSupernet(4, 4, stem, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
net.checkpoint_cells = checkpointed
e = search_memory(net, [batch, 4, 128, 128, 128], generators, tau=5.0, autocast=autocast, savers=savers)
print(json.dumps({**e.as_gib(), "parameters_count": sum(p.numel() for p in net.parameters())}))
"""


def estimate_in(pythonpath: Path, batch: int, stem: int, savers: bool, checkpointed: bool, autocast: bool = True):
    settings = json.dumps([batch, stem, savers, checkpointed, autocast])
    done = subprocess.run([sys.executable, "-c", ESTIMATE_SCRIPT, settings], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(pythonpath)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def old_core(folder: Path) -> Path:
    """The package as of OLD_LAYOUT_COMMIT, with today's estimator copied in."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_LAYOUT_COMMIT, "nnunet_scnas"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for name in ("memory.py", "search_memory.py"):
        shutil.copy(ROOT / "nnunet_scnas" / name, folder / "nnunet_scnas" / name)
    return folder


def stock_brain_tumour(batch: int):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_scnas.search_memory import network_memory
    with torch.device("meta"):
        network = get_network_from_plans(
            "dynamic_network_architectures.architectures.unet.PlainConvUNet", BRAIN_TUMOUR_ARCH,
            ["conv_op", "norm_op", "dropout_op", "nonlin"], BRAIN_TUMOUR["input_channels"],
            BRAIN_TUMOUR["num_classes"], allow_init=False, deep_supervision=True)
    estimate = network_memory(network, [batch, 4, *BRAIN_TUMOUR["patch"]], autocast=True)
    return {**estimate.as_gib(), "parameters_count": sum(p.numel() for p in network.parameters())}


def layout_estimates():
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = old_core(Path(tmp))
        for batch in (1, 2):
            rows[f"old layout, batch {batch}"] = estimate_in(old, batch, 48, savers=False, checkpointed=False)
            rows[f"C/4, batch {batch}"] = estimate_in(ROOT, batch, 48, savers=False, checkpointed=False)
            rows[f"C/4 + savers, batch {batch}"] = estimate_in(ROOT, batch, 48, savers=True, checkpointed=False)
            rows[f"C/4 + savers + checkpointed cells, batch {batch}"] = estimate_in(ROOT, batch, 48, savers=True,
                                                                                    checkpointed=True)
            rows[f"stock PlainConvUNet (nnU-Net's plan), batch {batch}"] = stock_brain_tumour(batch)
            print(f"estimates at batch {batch} done", flush=True)
        saved = {"old layout": estimate_in(old, 1, 48, savers=False, checkpointed=False, autocast=False),
                 "C/4 + savers": estimate_in(ROOT, 1, 48, savers=True, checkpointed=False, autocast=False)}
    return rows, saved


# One real search step on the CPU (weight step then architecture step, as `search_iteration` does), in a fresh
# process: the RSS above the RSS before the step, the live tensor bytes, and the estimate of the same step.
CPU_SCRIPT = """
import contextlib, json, resource, sys, time, torch
from nnunet_scnas.memory import measure_peak
from nnunet_scnas.search_memory import _stand_in_loss, search_memory
from nnunet_scnas.supernet import SCNASSupernet
patch, batch, stem, checkpointed, what = json.loads(sys.argv[1])
torch.set_num_threads(2)
strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
torch.manual_seed(0)
net = SCNASSupernet(2, 3, stem, strides)
net.checkpoint_cells, net.tau = checkpointed, 5.0
optimizers = torch.optim.Adam(net.weight_parameters()), torch.optim.Adam(net.arch_parameters())
def step(seed=0):
    for kind, optimizer in zip(("weights", "architecture"), optimizers):
        net.generator, net.arch_grad = torch.Generator().manual_seed(seed), kind == "architecture"
        x = torch.randn(batch, 2, *patch)
        trained = net.arch_parameters() if kind == "architecture" else net.weight_parameters()
        with net.frozen_weights() if kind == "architecture" else contextlib.nullcontext():
            _stand_in_loss(net(x), x)[0].backward(inputs=trained)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
if what == "memory":
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    live = measure_peak(step)  # the first step: Adam's state is made in it, as the estimate counts
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    with torch.device("meta"):
        meta = SCNASSupernet(2, 3, stem, strides)
    meta.checkpoint_cells = checkpointed
    e = search_memory(meta, [batch, 2, *patch], [torch.Generator().manual_seed(0)], tau=5.0)
    print(json.dumps({"rss_above_before": rss, "live_peak": live, "estimate": e.total - e.parameters}))
else:
    times = {False: [], True: []}
    for repeat in range(4):
        for flag in (False, True):
            net.checkpoint_cells = flag
            start = time.perf_counter()
            step(repeat)
            times[flag].append(time.perf_counter() - start)
    print(json.dumps({str(k): v[1:] for k, v in times.items()}))
"""


def cpu_measurements(patch, batch, stem):
    def run(*settings):
        done = subprocess.run([sys.executable, "-c", CPU_SCRIPT, json.dumps(settings)], capture_output=True,
                              text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return json.loads(done.stdout.strip().splitlines()[-1])
    memory = {f"checkpointed cells: {c}": run(patch, batch, stem, c, "memory") for c in (False, True)}
    times = run(patch, batch, stem, False, "time")
    plain, checkpointed = statistics.median(times["False"]), statistics.median(times["True"])
    return memory, {"plain_s": plain, "checkpointed_s": checkpointed, "ratio": checkpointed / plain,
                    "all_times_s": times}


def write_brain_tumour_plans(tmp: Path) -> str:
    """nnU-Net's three folders under `tmp` (set in the environment) with a dataset whose plans file holds nnU-Net's
    BrainTumour 3d_fullres plan; returns the dataset's name."""
    name = "Dataset998_BrainTumourPlan"
    folder = tmp / "nnUNet_preprocessed" / name
    folder.mkdir(parents=True)
    (tmp / "nnUNet_raw" / name).mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"},
        "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
        "numTraining": 484, "file_ending": ".nii.gz"}))
    plans = {"dataset_name": name, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
             "original_median_shape_after_transp": [138, 169, 138], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "by hand",
             "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
             "configurations": {"3d_fullres": {
                 "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                 "batch_size": 2, "patch_size": BRAIN_TUMOUR["patch"], "median_image_size_in_voxels": [138, 169, 138],
                 "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"] * 4,
                 "use_mask_for_norm": [True] * 4, "resampling_fn_data": "resample_data_or_seg_to_shape",
                 "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
                 "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                 "resampling_fn_probabilities_kwargs": {}, "batch_dice": False,
                 "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                  "arch_kwargs": BRAIN_TUMOUR_ARCH,
                                  "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    os.environ.update({"nnUNet_raw": str(tmp / "nnUNet_raw"), "nnUNet_preprocessed": str(tmp / "nnUNet_preprocessed"),
                       "nnUNet_results": str(tmp)})
    return name


def width_matching():
    """`export_plans(width="auto")` on a plans file with nnU-Net's BrainTumour 3d_fullres plan."""
    import torch

    from nnunet_scnas import CELL_TYPES, EDGES, OPS, derive_genotype
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        name = write_brain_tumour_plans(Path(tmp))
        from nnunet_scnas.nnunet.export.plans_export import export_plans

        genotypes = {path.stem: str(path) for path in sorted((ROOT / "plans").glob("*.json"))}
        generator = torch.Generator().manual_seed(0)
        for k in range(20):
            genotype = derive_genotype({ct: torch.randn(len(EDGES), len(OPS), generator=generator) for ct in CELL_TYPES})
            genotypes[f"random_{k}"] = str(Path(tmp) / f"random_{k}.json")
            Path(genotypes[f"random_{k}"]).write_text(json.dumps(genotype.to_dict()))
        for label, path in genotypes.items():
            done = export_plans(name, path, width="auto", force=True)
            results[label] = {"width": done.stem_width, "derived_gflops": done.derived.flops / 1e9,
                              "stock_gflops": done.stock.flops / 1e9, "derived_parameters": done.derived.parameters,
                              "stock_parameters": done.stock.parameters}
    randoms = [r["width"] for k, r in results.items() if k.startswith("random_")]
    return results, {"random_width_median": statistics.median(randoms), "random_width_min": min(randoms),
                     "random_width_max": max(randoms)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-patch", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--cpu-stem", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    import torch

    started, load = time.time(), [os.getloadavg()[0]]
    rows, saved = layout_estimates()
    measured = json.loads(MEASURED_OLD_LAYOUT.read_text())
    measured_gib = measured["results"]["nnUNetTrainerSCNASSearch"]["peak_memory_mib"] / 1024
    calibration = {"measured_gib": measured_gib, "measured_on": measured["machine"], "measured_command": measured["command"],
                   "estimated_gib": rows["old layout, batch 1"]["total"],
                   "error": rows["old layout, batch 1"]["total"] / measured_gib - 1}
    load.append(os.getloadavg()[0])
    memory, timing = cpu_measurements(args.cpu_patch, args.cpu_batch, args.cpu_stem)
    load.append(os.getloadavg()[0])
    widths, width_summary = width_matching()
    load.append(os.getloadavg()[0])
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_1min": load}, "torch": torch.__version__,
        "seconds": round(time.time() - started),
        "brain_tumour_plan": {**BRAIN_TUMOUR, "search_strides": STRIDES_128, "stem_width": 48, "dtypes": "CUDA autocast"},
        "estimates_gib": rows,
        "saved_float32_gib": {k: v["activations"] for k, v in saved.items()},
        "calibration": calibration,
        "cpu": {"patch": args.cpu_patch, "batch": args.cpu_batch, "stem_width": args.cpu_stem, "memory_bytes": memory,
                "step_time": timing},
        "width_matching_128": widths, "width_matching_summary": width_summary,
    }
    report["targets"] = {
        "C/4 + savers saved bytes / old layout's (batch 1, fp32)": [
            saved["C/4 + savers"]["activations"] / saved["old layout"]["activations"], "<= 0.28"],
        "estimated peak, batch 2, C/4 + savers + checkpointed cells (GiB)": [
            rows["C/4 + savers + checkpointed cells, batch 2"]["total"], "<= 20"],
        "checkpointed / plain step time (CPU)": [timing["ratio"], "<= 1.4"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "search_memory.md").write_text(markdown(report))
    print((args.out / "search_memory.md").read_text())


def markdown(r) -> str:
    c, m = r["calibration"], r["machine"]
    lines = ["# Search memory at nnU-Net's BrainTumour plan", "",
             f"Command: `{r['command']}` ({r['seconds']} s)  ", f"Date: {r['date']}  ",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores; 1-min load average at the start and after each part: "
             f"{m['load_average_1min']}  ", f"torch {r['torch']}", "",
             "## Estimated peak of one search iteration (GiB)", "",
             "Patch 128^3, 4 channels, 4 outputs, stem width 48, strides 2 x 3, CUDA autocast dtypes; the larger of "
             "the weight and architecture steps, over the first two iterations' two-op samples. "
             "Savers: one LeakyReLU per state, constant edge weights in the weight step, frozen weights in the "
             "architecture step.", "",
             "| layout | parameters | params + grads + Adam | activations | backward | peak |", "|---|---:|---:|---:|---:|---:|"]
    for name, e in r["estimates_gib"].items():
        lines.append(f"| {name} | {e['parameters_count'] / 1e6:.1f} M | "
                     f"{e['parameters'] + e['gradients'] + e['optimizer_state']:.2f} | {e['activations']:.2f} | "
                     f"{e['backward_working_set']:.2f} | **{e['total']:.1f}** |")
    lines += ["", f"Bytes alive after one two-op forward in float32 (the tensors saved for the backward), batch 1: "
              f"old layout {r['saved_float32_gib']['old layout']:.1f} GiB, C/4 + savers "
              f"{r['saved_float32_gib']['C/4 + savers']:.1f} GiB.", "",
              "## Calibration against the one GPU measurement", "",
              f"Old layout, batch 1: measured {c['measured_gib']:.1f} GiB (`torch.cuda.max_memory_allocated`, "
              f"{c['measured_on']}, `{c['measured_command']}`), estimated {c['estimated_gib']:.1f} GiB: "
              f"error {c['error']:+.1%}.", "",
              "## The estimate against a real step on the CPU", "",
              f"Patch {r['cpu']['patch']}, batch {r['cpu']['batch']}, stem {r['cpu']['stem_width']}, float32, a weight "
              f"step then an architecture step, each case in a fresh process (MiB):", "",
              "| case | estimate | live tensor peak (measured) | peak RSS above the RSS before the step |", "|---|---:|---:|---:|"]
    for name, e in r["cpu"]["memory_bytes"].items():
        lines.append(f"| {name} | {e['estimate'] / 2**20:.0f} | {e['live_peak'] / 2**20:.0f} | "
                     f"{e['rss_above_before'] / 2**20:.0f} |")
    t = r["cpu"]["step_time"]
    lines += ["", "The live tensor peak is sampled after every op of the real step (forward, backward, Adam); the RSS "
              "adds what the CPU allocator keeps and the CPU kernels' own buffers.", "",
              f"Step time (weight + architecture step, CPU, median of 3 interleaved): plain {t['plain_s']:.2f} s, "
              f"checkpointed cells {t['checkpointed_s']:.2f} s, ratio {t['ratio']:.2f}.", "",
              "## FLOPs-matched width at 128^3 (`export-plans --width auto`)", "",
              "Against stock PlainConvUNet at nnU-Net's BrainTumour 3d_fullres plan (32..320 features, 6 stages).", "",
              "| genotype | width | derived GFLOPs | stock GFLOPs | derived parameters | stock parameters |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, w in r["width_matching_128"].items():
        if not name.startswith("random_"):
            lines.append(f"| {name} | {w['width']} | {w['derived_gflops']:.0f} | {w['stock_gflops']:.0f} | "
                         f"{w['derived_parameters'] / 1e6:.1f} M | {w['stock_parameters'] / 1e6:.1f} M |")
    s = r["width_matching_summary"]
    lines += [f"| 20 random argmax genotypes | median {s['random_width_median']} ({s['random_width_min']}..{s['random_width_max']}) | | | | |",
              "", "## Targets", "", "| target | value | goal |", "|---|---:|---:|"]
    for name, (value, goal) in r["targets"].items():
        lines.append(f"| {name} | {value:.2f} | {goal} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
