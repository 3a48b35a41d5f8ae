"""Training memory and step time of the memory modes (plain, lean, cells) against nnU-Net's stock network.

1. Estimates (meta device, CUDA autocast dtypes, `nnunet_scnas/search_memory.py`) at three plans: the embedded
   brain set's (24x48x40, batch 2), nnU-Net's BrainTumour plan (128^3, batch 2) and a 64x128x96 plan (batch 2,
   1 channel; strides from nnU-Net's own topology planner): stock PlainConvUNet, the derived network of the
   shipped demo genotype at its FLOPs-matched width in each mode, and the width `--match memory` finds in each
   mode; the search (stem 48) at 128^3 in each mode, for the first iteration's samples and for the worst draw
   the issue names (logits concentrated on max_pool_3x3x3 and dil_sep_conv_3x3x3_r4 on every edge).
2. A real CPU step (float32, batch 1, width 72, 32x64x48, the derived network): the peak of its live tensor
   bytes (sampled after every op) against the estimate, per mode.
3. CPU step time at the embedded brain plan (one thread, channels-last, each network built by nnU-Net's
   `get_network_from_plans` in its own process, interleaved over `--rounds`): stock, derived plain / lean / cells.
4. Compiled (unless `--no-compile`): what AOTAutograd's min-cut partitioner (the one `torch.compile` uses)
   keeps for the backward, summed over the forward graph's outputs, stock vs derived plain vs lean at the
   embedded brain plan (float32); and the inductor step time of stock, derived plain and lean with compile time.

    python benchmarks/lean_memory.py              # about 30 minutes on 2 idle CPU cores
    python benchmarks/lean_memory.py --no-compile # parts 1-3

Writes lean_memory.json and lean_memory.md here.
"""
import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from derived_speed import GENOTYPE, run_step  # noqa: E402
from search_memory import BRAIN_TUMOUR_ARCH, machine  # noqa: E402

GIB = 2 ** 30
MODES = ("plain", "lean", "cells")
TOLERANCE = 0.10  # export-plans' AUTO_WIDTH_TOLERANCE


def stock_arch(strides, features_base=32, max_features=320) -> dict:
    """nnU-Net's PlainConvUNet entry for `strides` (the planner's default features: 32 doubling up to 320)."""
    n = len(strides)
    return {**BRAIN_TUMOUR_ARCH, "n_stages": n, "strides": [list(s) for s in strides],
            "features_per_stage": [min(features_base * 2 ** i, max_features) for i in range(n)],
            "kernel_sizes": [[3, 3, 3]] * n, "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1)}


def plans() -> dict:
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    _, strides_64, *_ = get_pool_and_conv_props([1, 1, 1], [64, 128, 96], 4, 999999)
    return {
        "embedded_brain": {"patch": [24, 48, 40], "batch": 2, "input_channels": 4, "num_classes": 4,
                           "arch": stock_arch([[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]])},
        "brain_tumour_128": {"patch": [128, 128, 128], "batch": 2, "input_channels": 4, "num_classes": 4,
                             "arch": BRAIN_TUMOUR_ARCH},
        "mri_64x128x96": {"patch": [64, 128, 96], "batch": 2, "input_channels": 1, "num_classes": 3,
                          "arch": stock_arch(strides_64)},
    }


def _stock_network(plan, deep_supervision=True):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    with torch.device("meta"):
        return get_network_from_plans("dynamic_network_architectures.architectures.unet.PlainConvUNet", plan["arch"],
                                      ["conv_op", "norm_op", "dropout_op", "nonlin"], plan["input_channels"],
                                      plan["num_classes"], allow_init=False, deep_supervision=deep_supervision)


def _derived(plan, width, mode="plain", deep_supervision=True):
    import torch
    from nnunet_scnas import CELL_LAYOUT, SCNASUNet
    with torch.device("meta"):
        return SCNASUNet(plan["input_channels"], plan["num_classes"], deep_supervision, json.loads(GENOTYPE.read_text()),
                         width, plan["arch"]["strides"][:4], CELL_LAYOUT, mode)


def estimates() -> dict:
    from nnunet_scnas.flops import closest_width, count_flops
    from nnunet_scnas.search_memory import network_memories, network_memory
    rows = {}
    for name, plan in plans().items():
        batch_shape = [plan["batch"], plan["input_channels"], *plan["patch"]]
        stock_memory = network_memory(_stock_network(plan), batch_shape, autocast=True).total
        stock_flops = count_flops(_stock_network(plan, False), (plan["input_channels"], *plan["patch"]))
        width = closest_width(lambda w: count_flops(_derived(plan, w, deep_supervision=False),
                                                    (plan["input_channels"], *plan["patch"])),
                              stock_flops, 1.0, "FLOPs")
        derived = {mode: e.total for mode, e in network_memories(_derived(plan, width), batch_shape, True).items()}
        matched = {}
        for mode in MODES:
            try:
                w = closest_width(lambda w: network_memory(_derived(plan, w, mode), batch_shape, True).total,
                                  stock_memory, TOLERANCE, "training memory")
                matched[mode] = {"width": w, "memory": network_memory(_derived(plan, w, mode), batch_shape, True).total}
            except ValueError as refusal:
                matched[mode] = {"refused": str(refusal)}
        rows[name] = {"patch": plan["patch"], "batch": plan["batch"], "stock_gflops": stock_flops / 1e9,
                      "flops_matched_width": width, "stock_memory": stock_memory, "derived_memory": derived,
                      "memory_matched": matched}
        print(name, json.dumps(rows[name]), flush=True)
    return rows


def search_estimates() -> dict:
    import torch
    from nnunet_scnas import OPS, SCNASSupernet
    from nnunet_scnas.nnunet.search.step import ARCHITECTURE_STEP, WEIGHT_STEP, sample_generator
    from nnunet_scnas.search_memory import search_memories
    batch_shape = [2, 4, 128, 128, 128]
    generators = [sample_generator(0, 0, step) for step in (WEIGHT_STEP, ARCHITECTURE_STEP)]
    rows = {}
    for draw in ("first iteration", "max_pool + dil_sep_r4 everywhere"):
        with torch.device("meta"):
            supernet = SCNASSupernet(4, 4, 48, BRAIN_TUMOUR_ARCH["strides"][:4])
        found = search_memories(supernet, batch_shape, generators, tau=5.0, autocast=True)  # makes CPU logits
        if draw != "first iteration":
            for alpha in supernet.alphas.values():
                with torch.no_grad():
                    alpha.zero_()
                    alpha[:, [OPS.index("max_pool_3x3x3"), OPS.index("dil_sep_conv_3x3x3_r4")]] = 20.0
            found = search_memories(supernet, batch_shape, generators, tau=5.0, autocast=True)
        rows[draw] = {mode: e.total for mode, e in found.items()}
        print("search", draw, {m: round(v / GIB, 2) for m, v in rows[draw].items()}, flush=True)
    return rows


REAL_STEP = r"""
import json, sys, torch
from nnunet_scnas import CELL_LAYOUT, SCNASUNet
from nnunet_scnas.memory import measure_peak
from nnunet_scnas.search_memory import _stand_in_loss, network_memory
mode, genotype = sys.argv[1], json.load(open(sys.argv[2]))
torch.set_num_threads(1)
build = lambda: SCNASUNet(1, 3, True, genotype, 72, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], CELL_LAYOUT, mode)
batch = [1, 1, 32, 64, 48]
with torch.device("meta"):
    estimate = network_memory(build(), batch)
net = build()
optimizer = torch.optim.Adam(net.parameters())
def step():
    optimizer.zero_grad(set_to_none=True)
    x = torch.randn(*batch)
    _stand_in_loss(net(x), x)[0].backward()
    optimizer.step()
step()
print(json.dumps({"measured": measure_peak(step),
                  "estimated": estimate.total - estimate.parameters - estimate.optimizer_state}))
"""


def real_steps() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rows = {}
    for mode in MODES:
        done = subprocess.run([sys.executable, "-c", REAL_STEP, mode, str(GENOTYPE)], capture_output=True, text=True,
                              env=env, check=True)
        rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print("real step", mode, rows[mode], flush=True)
    return rows


def step_specs(width: int) -> dict:
    plan = plans()["embedded_brain"]
    scales, scale = [], [1, 1, 1]
    for stride in plan["arch"]["strides"][:3]:
        scale = [a * b for a, b in zip(scale, stride)]
        scales.append(scale)
    common = {"input_channels": plan["input_channels"], "num_classes": plan["num_classes"], "patch": plan["patch"],
              "batch": plan["batch"], "scales": scales}
    specs = {"stock": {**common, "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": plan["arch"], "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}
    for mode in MODES:
        specs[f"derived {mode}"] = {**common, "architecture": {
            "network_class_name": "nnunet_scnas.nnunet.plans.SCNASUNetFromPlans", "_kw_requires_import": [],
            "arch_kwargs": {"genotype": json.loads(GENOTYPE.read_text()), "stem_width": width,
                            "strides": plan["arch"]["strides"][:4], "cell_layout": "concat_of_quarter_nodes",
                            "memory_mode": mode}}}
    return specs


PARTITION = r"""
import json, sys, torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunet_scnas.memory import compiled_forward_keeps
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
arch = spec["architecture"]
network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 spec["input_channels"], spec["num_classes"], allow_init=True, deep_supervision=True)
x = torch.randn(spec["batch"], spec["input_channels"], *spec["patch"])
print(json.dumps({"bytes": compiled_forward_keeps(network, x)[1]}))
"""


def compiled_kept(specs) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rows = {}
    for name in ("stock", "derived plain", "derived lean"):
        done = subprocess.run([sys.executable, "-c", PARTITION, json.dumps(specs[name])], capture_output=True,
                              text=True, env=env)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])["bytes"]
        print("compiled keeps", name, rows[name] / 2 ** 20, "MiB", flush=True)
    return rows


def eager_kept(specs) -> dict:
    """The same quantity in eager mode: what the forward leaves alive, float32 (the estimator's trace)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunet_scnas.memory import trace_forward
    rows = {}
    for name in ("stock", "derived plain", "derived lean"):
        spec, arch = specs[name], specs[name]["architecture"]
        with torch.device("meta"):
            network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                             arch["_kw_requires_import"], spec["input_channels"],
                                             spec["num_classes"], allow_init=False, deep_supervision=True)
        rows[name] = trace_forward(lambda: network(torch.zeros(spec["batch"], spec["input_channels"], *spec["patch"],
                                                               device="meta"))).alive
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process, after one warm-up")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    import torch

    started, load = time.time(), [os.getloadavg()[0]]
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "genotype": str(GENOTYPE.relative_to(ROOT)),
              "code": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, check=True).stdout.strip()}
    report["estimates"] = estimates()
    report["search"] = search_estimates()
    report["real_step"] = real_steps()
    load.append(os.getloadavg()[0])
    specs = step_specs(report["estimates"]["embedded_brain"]["flops_matched_width"])
    times = {name: [] for name in specs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, spec in specs.items():
                result = run_step(spec, ROOT, steps=args.steps)
                times[name].append(result["step_s"])
                print(f"round {round_ + 1}: {name} {result['step_s']:.3f} s", flush=True)
    report["eager_step_s"] = times
    load.append(os.getloadavg()[0])
    if not args.no_compile:
        report["kept_for_backward"] = {"eager": eager_kept(specs), "compiled": compiled_kept(specs)}
        report["compiled_step"] = {}
        for name in ("stock", "derived plain", "derived lean"):
            report["compiled_step"][name] = run_step(specs[name], ROOT, compiled=True, steps=args.steps)
            print("compiled", name, report["compiled_step"][name], flush=True)
        load.append(os.getloadavg()[0])
    report["machine"] = {**machine(), "load_average_1min": load}
    report["seconds"] = round(time.time() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lean_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "lean_memory.md").write_text(markdown(report))
    print((args.out / "lean_memory.md").read_text())


def markdown(r) -> str:
    m = r["machine"]
    lines = ["# Memory modes: training memory and step time against stock nnU-Net", "",
             f"Command: `{r['command']}`  ", f"Date: {r['date']} ({r['seconds']} s), code `{r['code']}`  ",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores; 1-min load average at the start and after each part: "
             f"{m['load_average_1min']}  ", f"torch {r['torch']}; genotype `{r['genotype']}`", "",
             "## Training memory, estimated (meta device, CUDA autocast dtypes; GiB, and x stock)", "",
             "| plan | stock | FLOPs-matched width | derived plain | derived lean | derived cells | "
             "memory-matched width: plain / lean / cells |", "|---|---:|---:|---:|---:|---:|---|"]
    for plan, e in r["estimates"].items():
        stock = e["stock_memory"]
        cells = " | ".join(f"{e['derived_memory'][mode] / GIB:.2f} ({e['derived_memory'][mode] / stock:.2f}x)"
                           for mode in MODES)
        matched = " / ".join(str(e["memory_matched"][mode].get("width", "refused")) for mode in MODES)
        lines.append(f"| {plan} ({'x'.join(map(str, e['patch']))}, batch {e['batch']}, stock "
                     f"{e['stock_gflops']:.0f} GFLOPs) | {stock / GIB:.2f} | {e['flops_matched_width']} | {cells} | "
                     f"{matched} |")
    lines += ["", "## The search at 128^3, batch 2, stem 48 (GiB, estimated)", "", "| draw | plain | lean | cells |",
              "|---|---:|---:|---:|"]
    lines += [f"| {draw} | " + " | ".join(f"{v[mode] / GIB:.1f}" for mode in MODES) + " |"
              for draw, v in r["search"].items()]
    lines += ["", "## Estimate against a real CPU step (float32, batch 1, 32x64x48, width 72; live tensor bytes of the "
              "second step, parameters and Adam state left out on both sides)", "",
              "| mode | measured (MiB) | estimated (MiB) | estimate / measured |", "|---|---:|---:|---:|"]
    lines += [f"| {mode} | {v['measured'] / 2 ** 20:.0f} | {v['estimated'] / 2 ** 20:.0f} | "
              f"{v['estimated'] / v['measured']:.2f} |" for mode, v in r["real_step"].items()]
    median = {name: statistics.median(t) for name, t in r["eager_step_s"].items()}
    lines += ["", "## CPU step time at the embedded brain plan (one thread, channels-last, eager; median of rounds)", "",
              "| network | median step (s) | rounds (s) | x stock | x derived plain |", "|---|---:|---|---:|---:|"]
    lines += [f"| {name} | {median[name]:.3f} | {', '.join(f'{t:.3f}' for t in times)} | "
              f"{median[name] / median['stock']:.2f} | {median[name] / median['derived plain']:.2f} |"
              for name, times in r["eager_step_s"].items()]
    if "compiled_step" in r:
        lines += ["", "## Compiled (embedded brain plan, float32)", "",
                  "| network | kept for the backward, eager (MiB) | kept, compiled: min-cut partition (MiB) | "
                  "compiled step (s) | compile + first step (s) |", "|---|---:|---:|---:|---:|"]
        for name, step in r["compiled_step"].items():
            lines.append(f"| {name} | {r['kept_for_backward']['eager'][name] / 2 ** 20:.0f} | "
                         f"{r['kept_for_backward']['compiled'][name] / 2 ** 20:.0f} | {step['step_s']:.3f} | "
                         f"{step['first_step_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
