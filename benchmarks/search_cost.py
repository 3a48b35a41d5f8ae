"""Memory and time of one training step: two-op supernet vs all-ops supernet vs derived network vs nnU-Net.

The paper's claim (§2.2) is that sampling two ops per edge makes the search affordable in 3D. This measures,
at one patch size, batch and stem width, one training step (forward + backward + Adam step) of:

    two_op           the SCNAS supernet, Algorithm 1 sampling (what the search trains)
    all_ops          the same supernet as a DARTS mixture of all ops (what SCNAS avoids)
    derived          the network derived from a sample genotype, same stem width
    derived_matched  the same genotype at the stem width whose FLOPs match plain_unet (`match_width`)
    plain_unet       nnU-Net's stock PlainConvUNet for the same 4-stage plan (features 32 doubling)

Each configuration runs in its own process. Memory is the peak above the process's baseline after the model,
optimizer and data are built: max RSS on the CPU (ru_maxrss), `torch.cuda.max_memory_allocated` on a GPU.
Time is the median over the timed steps, after warm-up steps. Writes results.json and results.md here.

    python benchmarks/search_cost.py                  # defaults sized for 2 CPU cores
    python benchmarks/search_cost.py --device cuda --patch 128 128 128 --stem-width 48
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("two_op", "all_ops", "derived", "derived_matched", "plain_unet")
NUM_CLASSES = 3
INPUT_CHANNELS = 1


def plan_strides(patch):
    """nnU-Net-style strides for 3 downsamplings: 2 along every axis that is still at least 8 voxels."""
    strides, size = [[1, 1, 1]], list(patch)
    for _ in range(3):
        stride = [2 if n >= 8 and n % 2 == 0 else 1 for n in size]
        strides.append(stride)
        size = [n // s for n, s in zip(size, stride)]
    return strides


def sample_genotype():
    """What a search yields structurally: the argmax of (here seeded random) logits, ~1 edge in 8 `zero`."""
    import torch

    from nnunet_scnas import CELL_TYPES, EDGES, OPS, derive_genotype
    generator = torch.Generator().manual_seed(2019)
    return derive_genotype({ct: torch.randn(len(EDGES), len(OPS), generator=generator) for ct in CELL_TYPES})


def plain_unet(strides, deep_supervision=True):
    """nnU-Net's default 3d_fullres network for a 4-stage plan (ExperimentPlanner defaults)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn
    return PlainConvUNet(
        input_channels=INPUT_CHANNELS, n_stages=4, features_per_stage=[min(32 * 2 ** i, 320) for i in range(4)],
        conv_op=nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 4, strides=strides, n_conv_per_stage=[2] * 4,
        num_classes=NUM_CLASSES, n_conv_per_stage_decoder=[2] * 3, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision)


def matched_width(patch, strides):
    import torch

    from nnunet_scnas import count_flops, match_width
    with torch.device("meta"):
        target = count_flops(plain_unet(strides, deep_supervision=False), (INPUT_CHANNELS, *patch))
    # widths are multiples of 4: the nearest can be ~4/width off in FLOPs, as export-plans allows
    return match_width(sample_genotype(), target, input_channels=INPUT_CHANNELS, num_classes=NUM_CLASSES,
                       patch_size=patch, strides=strides, tolerance=0.10)


def build(config, args, strides):
    import torch

    from nnunet_scnas import CELL_LAYOUT, SCNASSupernet, SCNASUNet
    if config in ("two_op", "all_ops"):
        model = SCNASSupernet(INPUT_CHANNELS, NUM_CLASSES, args.stem_width, strides, deep_supervision=True)
        model.mode, model.generator, model.tau = config, torch.Generator().manual_seed(0), args.tau
        model.arch_grad = False  # a weight step: the edge weights enter as constants, as the search trains them
        return model, model.weight_parameters()
    if config in ("derived", "derived_matched"):
        width = args.stem_width if config == "derived" else args.matched_width
        model = SCNASUNet(input_channels=INPUT_CHANNELS, num_classes=NUM_CLASSES, deep_supervision=True,
                          genotype=sample_genotype().to_dict(), stem_width=width, strides=strides,
                          cell_layout=CELL_LAYOUT)
        return model, list(model.parameters())
    model = plain_unet(strides)
    return model, list(model.parameters())


def run_one(config, args):
    """Measure one configuration in this process; print a JSON line."""
    import torch
    from torch import nn

    from nnunet_scnas import count_flops, count_parameters
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    strides = plan_strides(args.patch)
    model, parameters = build(config, args, strides)
    model.to(device).train()
    optimizer = torch.optim.Adam(parameters, lr=1e-4)
    x = torch.randn(args.batch, INPUT_CHANNELS, *args.patch, device=device)
    target = torch.randint(0, NUM_CLASSES, (args.batch, *args.patch), device=device)
    # deep supervision as nnU-Net trains: targets subsampled to each output's scale, weights 1, 1/2, 1/4
    targets, scale = [], [1, 1, 1]
    for stride in strides[:3]:
        scale = [a * b for a, b in zip(scale, stride)]
        targets.append(target[:, ::scale[0], ::scale[1], ::scale[2]])

    def step():
        optimizer.zero_grad(set_to_none=True)
        outputs = model(x)
        loss = sum(0.5 ** i * nn.functional.cross_entropy(o, t) for i, (o, t) in enumerate(zip(outputs, targets)))
        loss.backward()
        optimizer.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        sync()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline

    flops = [count_flops(model, (INPUT_CHANNELS, *args.patch)) for _ in range(3 if config == "two_op" else 1)]
    print(json.dumps({
        "config": config, "peak_memory_mib": peak / 2 ** 20, "median_step_s": statistics.median(times),
        "step_times_s": times, "forward_gflops_per_sample": statistics.mean(flops) / 1e9,
        "parameters": count_parameters(model)}))


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--stem-width", type=int, default=8)
    parser.add_argument("--tau", type=float, default=5.0, help="two_op temperature (5: the schedule's start)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    # 1 by default: on a CPU shared with other jobs, multi-threaded steps stall and the timings scatter
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--run-one", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--matched-width", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        return run_one(args.run_one, args)

    import torch
    strides = plan_strides(args.patch)
    args.matched_width = matched_width(args.patch, strides)
    results, load = {}, [os.getloadavg()]
    for config in args.configs:
        command = [sys.executable, __file__, "--run-one", config, "--matched-width", str(args.matched_width),
                   "--patch", *map(str, args.patch), "--batch", str(args.batch), "--stem-width", str(args.stem_width),
                   "--tau", str(args.tau), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[config] = json.loads(done.stdout.strip().splitlines()[-1])
        load.append(os.getloadavg())
        print(f"{config}: {results[config]['median_step_s']:.3f} s/step, "
              f"{results[config]['peak_memory_mib']:.0f} MiB", flush=True)

    def ratio(key, a, b):
        return results[a][key] / results[b][key] if a in results and b in results else None

    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "device": args.device, "threads": args.threads,
                    "load_average_1min_before_each_run_and_after": [round(l[0], 2) for l in load]},
        "torch": torch.__version__,
        "settings": {"patch": args.patch, "batch": args.batch, "stem_width": args.stem_width, "tau": args.tau,
                     "strides": strides, "steps": args.steps, "warmup": args.warmup,
                     "matched_width": args.matched_width, "genotype": str(sample_genotype())},
        "results": results,
        "ratios": {
            "two_op/all_ops peak memory": ratio("peak_memory_mib", "two_op", "all_ops"),
            "two_op/all_ops step time": ratio("median_step_s", "two_op", "all_ops"),
            "two_op/derived peak memory": ratio("peak_memory_mib", "two_op", "derived"),
            "two_op/derived step time": ratio("median_step_s", "two_op", "derived"),
            "derived_matched/plain_unet FLOPs": ratio("forward_gflops_per_sample", "derived_matched", "plain_unet"),
            "derived_matched/plain_unet step time": ratio("median_step_s", "derived_matched", "plain_unet"),
        },
        "targets": {"two_op/all_ops peak memory": "<= 0.30", "two_op/derived step time": "<= 2.5",
                    "derived_matched/plain_unet FLOPs": "within 0.95 .. 1.05"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(report))
    print(json.dumps(report["ratios"], indent=2))


def markdown(report) -> str:
    s, m = report["settings"], report["machine"]
    lines = [
        "# Search cost: one training step (forward + backward + Adam)", "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}  ",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['platform']}; device {m['device']}, "
        f"{m['threads']} torch threads; 1-min load average before each run and after: "
        f"{m['load_average_1min_before_each_run_and_after']}  ",
        f"torch {report['torch']}  ",
        f"Patch {s['patch']}, batch {s['batch']}, stem width {s['stem_width']} (derived_matched: {s['matched_width']}), "
        f"tau {s['tau']}, strides {s['strides']}, median of {s['steps']} steps after {s['warmup']} warm-up.", "",
        "| configuration | peak memory above baseline (MiB) | median step (s) | forward GFLOPs / sample | parameters |",
        "|---|---:|---:|---:|---:|",
    ]
    for config, r in report["results"].items():
        lines.append(f"| {config} | {r['peak_memory_mib']:.0f} | {r['median_step_s']:.3f} | "
                     f"{r['forward_gflops_per_sample']:.2f} | {r['parameters']:,} |")
    lines += ["", "| ratio | measured | target |", "|---|---:|---:|"]
    for name, value in report["ratios"].items():
        lines.append(f"| {name} | {'-' if value is None else f'{value:.2f}'} | {report['targets'].get(name, '')} |")
    lines += ["", "Sample genotype (the argmax of seeded random logits):", "", "```", s["genotype"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
