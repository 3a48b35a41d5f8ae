"""One prepared check of today's CUDA path on one H100 or H200, in at most 9 minutes (issue 25).

    python benchmarks/gpu_check.py            # on the GPU machine: writes gpu_check_<device>.md and .json here
    python benchmarks/gpu_check.py --dry-run  # the same code at a tiny size on the CPU (under a minute)

At nnU-Net's BrainTumour plan (128^3, 4 channels, 4 classes, batch 2; the search at stem 48), each section a few
real iterations on random data (`nnunet_scnas/nnunet/step_timing.py`, the search trainer's own iteration):
1. the search step in each memory mode (plain, lean, checkpointed cells): s/iteration, `max_memory_allocated` and
   `max_memory_reserved` against the estimate (`search_step_estimates`), both GradScalers' scales finite;
2. the worst case of the op choices (every edge on its two dearest ops, `search_worst_case.py`), plain and
   checkpointed, against the worst-case estimate;
3. stock nnU-Net's PlainConvUNet at the plan (nnUNetTrainer's step);
4. the derived network of the shipped search genotype at the FLOPs-matched width, nnUNetTrainer's step compiled
   with `torch.compile` (compile time, s/iteration, peak against the estimate).
Each section is guarded (a failure is recorded, the rest still runs) and a global time budget skips what is left.
The dry run compiles with the "eager" backend (dynamo's tracing without inductor's code generation, minutes on a
CPU) and has no CUDA memory figures.
"""
import argparse
import gc
import json
import math
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from search_memory import BRAIN_TUMOUR_ARCH, STRIDES_128  # noqa: E402

from nnunet_scnas.atomic import write_json, write_text  # noqa: E402
from nnunet_scnas.derived import SCNASUNet  # noqa: E402
from nnunet_scnas.cell import CELL_LAYOUT  # noqa: E402
from nnunet_scnas.flops import count_flops, match_width  # noqa: E402
from nnunet_scnas.memory import GiB  # noqa: E402
from nnunet_scnas.nnunet.memory_estimate import search_step_estimates  # noqa: E402
from nnunet_scnas.nnunet.provenance import machine, versions  # noqa: E402
from nnunet_scnas.nnunet.step_timing import nnunet_step, search_step, seconds_per_iteration  # noqa: E402
from nnunet_scnas.search_memory import fixed_sample, network_memory  # noqa: E402
from nnunet_scnas.search_worst_case import op_sample  # noqa: E402
from nnunet_scnas.supernet import SCNASSupernet  # noqa: E402

BUDGET_S = 9 * 60 - 30  # the whole check, with 30 s for start-up and writing
GENOTYPE = ROOT / "plans" / "sim_braintumour_cpu_search.json"  # the shipped search genotype


class SearchSettings:
    """The search trainer's attributes that its iteration reads (`nnUNetTrainerSCNASSearch`'s defaults)."""
    weight_lr, weight_betas, arch_lr, arch_betas = 0.025, (0.1, 0.001), 3e-3, (0.5, 0.999)
    plateau_patience, plateau_factor, tau_start, search_seed, grad_clip = 20, 0.1, 5.0, 12345, 12.0


def plan(dry_run: bool) -> dict:
    if dry_run:  # small enough for a CPU minute; the stock network shrinks to 4 stages to fit the patch
        arch = {**BRAIN_TUMOUR_ARCH, "n_stages": 4, "features_per_stage": [8, 16, 32, 64],
                "kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "n_conv_per_stage": [2] * 4,
                "n_conv_per_stage_decoder": [2] * 3}
        return {"batch_shape": [1, 4, 16, 16, 16], "num_classes": 4, "stem_width": 4, "strides": STRIDES_128,
                "stock_arch": arch, "warmup": 0, "timed": 1, "width_tolerance": 1.0}
    return {"batch_shape": [2, 4, 128, 128, 128], "num_classes": 4, "stem_width": 48, "strides": STRIDES_128,
            "stock_arch": BRAIN_TUMOUR_ARCH, "warmup": 1, "timed": 3, "width_tolerance": 0.05}


def stock_network(p: dict, device) -> torch.nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    with torch.device(device):
        return get_network_from_plans("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                      p["stock_arch"], ["conv_op", "norm_op", "dropout_op", "nonlin"],
                                      p["batch_shape"][1], p["num_classes"], allow_init=device.type != "meta",
                                      deep_supervision=True)


def derived_network(p: dict, width: int, device) -> torch.nn.Module:
    with torch.device(device):
        return SCNASUNet(p["batch_shape"][1], p["num_classes"], True, json.loads(GENOTYPE.read_text()), width,
                         p["strides"], CELL_LAYOUT)


def memory_figures(device, estimate_bytes: int) -> dict:
    """Peak CUDA memory of what ran since the last reset, against an estimate (none off CUDA)."""
    figures = {"estimate_gib": estimate_bytes / GiB}
    if device.type == "cuda":
        allocated, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
        figures.update(max_memory_allocated_gib=allocated / GiB, max_memory_reserved_gib=reserved / GiB,
                       allocated_over_estimate=allocated / estimate_bytes, reserved_over_allocated=reserved / allocated)
    return figures


def timed_step(step, device, p: dict) -> dict:
    seconds = seconds_per_iteration(step.run, device, warmup=p["warmup"], iterations=p["timed"])
    scales = step.scales()
    return {"seconds_per_iteration": seconds, "grad_scaler_scales": scales,
            "scales_finite": all(math.isfinite(s) for s in scales.values())}


def fresh(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def search_section(p: dict, device, estimates, mode: str, worst_ops=None) -> dict:
    """The search trainer's iteration; with `worst_ops`, every edge runs those two ops instead of a sample."""
    fresh(device)
    torch.manual_seed(0)
    with torch.device(device):
        supernet = SCNASSupernet(p["batch_shape"][1], p["num_classes"], p["stem_width"], p["strides"])
    supernet.memory_mode = mode
    step = search_step(supernet, p["batch_shape"], p["num_classes"], device, SearchSettings)
    if worst_ops:  # an instance attribute, as `search_memories` traces a given sample
        masks = {cell_type: mask.to(device) for cell_type, mask in op_sample(worst_ops).items()}
        supernet.architecture_weights = fixed_sample(supernet, masks)
    result = timed_step(step, device, p)
    estimate = (estimates.worst if worst_ops else estimates.typical)[mode]
    return {**result, **memory_figures(device, estimate.total), "memory_mode": mode,
            "ops": list(worst_ops) if worst_ops else "two-op samples of the search's first iterations"}


def network_section(p: dict, device, build, compiled: bool) -> dict:
    """nnUNetTrainer's iteration of the network `build(device)` makes (compiled as nnU-Net compiles it on CUDA)."""
    estimate = network_memory(build(torch.device("meta")), p["batch_shape"], autocast=True)
    fresh(device)
    torch.manual_seed(0)
    network = build(device)
    result = {"parameters": sum(q.numel() for q in network.parameters())}
    if compiled:
        backend = "inductor" if device.type == "cuda" else "eager"
        network = torch.compile(network, backend=backend)
        step = nnunet_step(network, p["batch_shape"], p["num_classes"], device)
        start = time.perf_counter()
        step.run()  # compiles
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.update(compile_backend=backend, compile_and_first_step_s=time.perf_counter() - start)
    else:
        step = nnunet_step(network, p["batch_shape"], p["num_classes"], device)
    return {**result, **timed_step(step, device, p), **memory_figures(device, estimate.total)}


def run_sections(p: dict, device, deadline: float) -> dict:
    sections, state = {}, {}

    def guarded(name, function):
        if time.monotonic() > deadline:
            sections[name] = {"status": "skipped: the time budget was spent"}
            return
        start = time.monotonic()
        print(f"{name} ...", flush=True)
        try:
            sections[name] = {"status": "ok", **function()}
        except Exception as error:  # recorded; the next section still runs
            sections[name] = {"status": f"failed: {type(error).__name__}: {error}",
                              "traceback": traceback.format_exc()[-3000:]}
        sections[name]["section_s"] = time.monotonic() - start
        print(f"{name}: {sections[name]['status']} ({sections[name]['section_s']:.0f} s)", flush=True)

    def estimate():
        found = search_step_estimates(
            lambda: SCNASSupernet(p["batch_shape"][1], p["num_classes"], p["stem_width"], p["strides"]),
            p["batch_shape"], SearchSettings.search_seed, SearchSettings.tau_start)
        state["estimates"] = found
        return {"worst_ops": list(found.worst_ops),
                **{f"{case}_{mode}_gib": getattr(found, case)[mode].total / GiB
                   for case in ("typical", "worst") for mode in ("plain", "lean", "cells")}}

    def matched_width():
        stock_flops = count_flops(stock_network(p, torch.device("meta")), tuple(p["batch_shape"][1:]))
        state["width"] = match_width(json.loads(GENOTYPE.read_text()), stock_flops,
                                     input_channels=p["batch_shape"][1], num_classes=p["num_classes"],
                                     patch_size=p["batch_shape"][2:], strides=p["strides"],
                                     tolerance=p["width_tolerance"])
        return {"stem_width": state["width"], "stock_gflops": stock_flops / 1e9}

    guarded("estimates", estimate)
    for mode in ("plain", "lean", "cells"):
        guarded(f"search, {mode}", lambda: search_section(p, device, state["estimates"], mode))
    for mode in ("lean", "cells", "plain"):  # plain last: its worst case is the one that may not fit
        guarded(f"search worst case, {mode}",
                lambda: search_section(p, device, state["estimates"], mode, state["estimates"].worst_ops))
    guarded("stock PlainConvUNet", lambda: network_section(p, device, lambda d: stock_network(p, d), compiled=False))
    guarded("FLOPs-matched width", matched_width)
    guarded("derived network, torch.compile",
            lambda: network_section(p, device, lambda d: derived_network(p, state["width"], d), compiled=True))
    return sections


def device_name(device) -> str:
    if device.type != "cuda":
        return "cpu_dry_run"
    return "".join(c if c.isalnum() else "_" for c in torch.cuda.get_device_name(device).lower()).strip("_")


def markdown(report: dict) -> str:
    lines = [f"# GPU check on {report['device']}", "", f"`{report['command']}`, {report['date']}, commit "
             f"{report['commit']}, {report['seconds']:.0f} s; PYTORCH_CUDA_ALLOC_CONF="
             f"{report['pytorch_cuda_alloc_conf'] or '(unset)'}", "",
             f"Plan: batch shape {report['plan']['batch_shape']}, {report['plan']['num_classes']} classes, search "
             f"stem {report['plan']['stem_width']}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), "",
             "| section | status | s/iteration | max allocated (GiB) | max reserved (GiB) | estimate (GiB) | "
             "allocated / estimate | scales finite |", "|---|---|---:|---:|---:|---:|---:|---|"]

    def number(value, digits=2):
        return "" if value is None else f"{value:.{digits}f}"
    for name, s in report["sections"].items():
        lines.append(f"| {name} | {s['status'].splitlines()[0][:80]} | {number(s.get('seconds_per_iteration'), 3)} | "
                     f"{number(s.get('max_memory_allocated_gib'))} | {number(s.get('max_memory_reserved_gib'))} | "
                     f"{number(s.get('estimate_gib'))} | {number(s.get('allocated_over_estimate'))} | "
                     f"{s.get('scales_finite', '')} |")
    compiled = report["sections"].get("derived network, torch.compile", {})
    if "compile_and_first_step_s" in compiled:
        lines += ["", f"Derived network compiled ({compiled['compile_backend']}): compile + first step "
                      f"{compiled['compile_and_first_step_s']:.0f} s."]
    lines += ["", "Full figures, errors and tracebacks: the .json beside this file."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny plan on the CPU: checks the code, not the GPU")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for gpu_check_<device>.md/.json")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all sections (default %(default)s)")
    args = parser.parse_args()
    started = time.monotonic()
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here; run it on the GPU machine, or pass --dry-run to check the code on the CPU")
    p = plan(args.dry_run)
    sections = run_sections(p, device, started + args.budget)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "device": device_name(device),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit, "machine": machine(),
              "versions": versions(), "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
              "plan": {k: v for k, v in p.items() if k != "stock_arch"}, "seconds": time.monotonic() - started,
              "sections": sections}
    stem = args.out / f"gpu_check_{report['device']}"
    write_json(stem.with_suffix(".json"), report)
    write_text(stem.with_suffix(".md"), markdown(report))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
