"""Speed of the derived network against nnU-Net's stock network, at equal FLOPs and at equal training memory.

1. Width matching (`export_plans(width="auto")`, meta device): the stem width of the shipped demo genotype
   (`plans/sim_braintumour_cpu_search.json`) that matches the stock network in FLOPs (the paper's rule) and in
   estimated training memory ("nnU-Net Revisited"), with FLOPs, parameters and memory of both networks, at the
   embedded brain set's plan (planned here by nnU-Net) and at nnU-Net's BrainTumour plan (128^3).
2. CPU training step (forward, deep-supervision loss, backward, nnU-Net's SGD step) at the embedded brain plan,
   both networks built by nnU-Net from the plans (the derived one at its FLOPs-matched width), channels-last as
   the trainers run them on the CPU, one thread: the stock network, the derived network of the code at git
   revision `--before` and of this checkout, each in its own process, interleaved over `--rounds`; then both
   networks of this checkout under `torch.compile` (inductor), with the compile time.
3. The per-op profile of one derived step (torch.profiler, self CPU time): what bounds it.

    python benchmarks/derived_speed.py                  # about 25 minutes on 2 CPU cores
    python benchmarks/derived_speed.py --no-compile     # steps 1-3 without the compiled runs

Writes derived_speed.json and derived_speed.md here.
"""
import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from search_memory import machine, write_brain_tumour_plans  # noqa: E402

GENOTYPE = ROOT / "plans" / "sim_braintumour_cpu_search.json"
BEFORE = "745c324"  # the last commit before the channels-last kernels
GIB = 2 ** 30

# One training step of a network that nnU-Net builds from a plans' architecture entry; run as its own process,
# with the package of the tree under test first on sys.path. Prints one JSON line.
STEP_SCRIPT = r"""
import json, statistics, sys, time, torch
from torch import nn
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(0)
arch = spec["architecture"]
network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 spec["input_channels"], spec["num_classes"], allow_init=True, deep_supervision=True)
network.to(memory_format=torch.channels_last_3d)  # as nnunet_scnas' CPU trainers run both networks
model = torch.compile(network) if spec["compiled"] else network
optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
x = torch.randn(spec["batch"], spec["input_channels"], *spec["patch"]).contiguous(memory_format=torch.channels_last_3d)
target = torch.randint(0, spec["num_classes"], (spec["batch"], *spec["patch"]))
scales = spec["scales"]
def step():
    optimizer.zero_grad(set_to_none=True)
    outputs = model(x)
    loss = sum(0.5 ** i * nn.functional.cross_entropy(o, target[:, ::s[0], ::s[1], ::s[2]])
               for i, (o, s) in enumerate(zip(outputs, scales)))
    loss.backward()
    optimizer.step()
start = time.perf_counter(); step(); first = time.perf_counter() - start
if spec["profile"]:
    from torch.profiler import profile
    with profile() as prof:
        step()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    print(json.dumps({"profile": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count,
                                   "ms": e.self_cpu_time_total / 1e3} for e in ops[:12]],
                      "total_ms": total / 1e3}))
    sys.exit()
times = []
for _ in range(spec["steps"]):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps({"first_step_s": first, "step_s": statistics.median(times), "times_s": times,
                  "modules": sum(1 for m in network.modules() if not list(m.children()))}))
"""


def plan_embedded_brain(tmp: Path) -> str:
    """The embedded brain-tumour-like set (10 cases, default size) planned by nnU-Net in the nnU-Net folders under
    `tmp` (already set in the environment: nnunetv2 reads them once); its dataset name."""
    from nnunet_scnas.nnunet.datasets import make_dataset
    folder = make_dataset("braintumour", tmp / "nnUNet_raw", cases=10, dataset_id=931, force=True)
    subprocess.run([Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess", "-d", "931", "-c", "3d_fullres",
                    "-np", "1", "-npfp", "1", "--no_pbar"], check=True, capture_output=True)
    return folder.name


def match_widths(dataset: str) -> dict:
    """The stem widths matched by FLOPs and by training memory, with both networks' sizes."""
    from nnunet_scnas.errors import UserError
    from nnunet_scnas.nnunet.export.plans_export import export_plans
    rows = {}
    for match in ("flops", "memory"):
        try:
            done = export_plans(dataset, str(GENOTYPE), width="auto", match=match, force=True)
        except UserError as refusal:  # no width within export-plans' tolerance: what it told the user
            rows[match] = {"refused": str(refusal)}
            continue
        rows[match] = {"stem_width": done.stem_width, "patch": done.patch_size, "batch": done.batch_size,
                       **{f"{side}_{key}": getattr(getattr(done, side), key) for side in ("stock", "derived")
                          for key in ("flops", "parameters", "training_memory")}}
    return rows


def architectures(dataset: str) -> dict:
    """The plans' stock and derived (FLOPs-matched) architecture entries, and what a step needs of the plan."""
    from nnunet_scnas.nnunet.export.plans_export import export_plans
    from nnunet_scnas.nnunet.plans import read_plans
    export_plans(dataset, str(GENOTYPE), width="auto", match="flops", force=True)
    plans = read_plans(dataset)
    configurations = plans.plans["configurations"]
    stock = configurations["3d_fullres"]
    scales, scale = [], [1, 1, 1]
    for stride in stock["architecture"]["arch_kwargs"]["strides"][:3]:
        scale = [a * b for a, b in zip(scale, stride)]
        scales.append(scale)
    common = {"input_channels": len(plans.dataset_json["channel_names"]),
              "num_classes": len(plans.dataset_json["labels"]), "patch": stock["patch_size"],
              "batch": stock["batch_size"], "scales": scales}
    return {"stock": {**common, "architecture": stock["architecture"]},
            "derived": {**common, "architecture": configurations["3d_fullres_scnas"]["architecture"]}}


def source_tree(revision: str, tmp: Path) -> Path:
    """The package `nnunet_scnas` of git `revision`, unpacked under `tmp`."""
    archive = tmp / f"{revision}.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision, "nnunet_scnas"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / revision, filter="data")
    return tmp / revision


def run_step(spec: dict, tree: Path, compiled=False, profile=False, steps=3) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", STEP_SCRIPT,
                           json.dumps({**spec, "compiled": compiled, "profile": profile, "steps": steps})],
                          capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process, after one warm-up")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    import torch

    started, load = time.time(), [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        widths = {"brain_tumour_128": match_widths(write_brain_tumour_plans(tmp))}
        print("widths at 128^3:", widths["brain_tumour_128"], flush=True)
        embedded = plan_embedded_brain(tmp)
        widths["embedded_brain"] = match_widths(embedded)
        print("widths at the embedded plan:", widths["embedded_brain"], flush=True)
        specs = architectures(embedded)
        trees = {"stock": ROOT, "derived_before": source_tree(args.before, tmp), "derived_after": ROOT}
        eager = {name: [] for name in trees}
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                result = run_step(specs["stock" if name == "stock" else "derived"], tree, steps=args.steps)
                eager[name].append(result)
                print(f"round {round_ + 1}: {name} {result['step_s']:.3f} s", flush=True)
        load.append(os.getloadavg()[0])
        compiled = {}
        if not args.no_compile:
            for name in ("stock", "derived_after"):
                compiled[name] = run_step(specs["stock" if name == "stock" else "derived"], trees[name],
                                          compiled=True, steps=args.steps)
                print(f"compiled {name}: {compiled[name]}", flush=True)
            load.append(os.getloadavg()[0])
        profiles = {name: run_step(specs["derived"], trees[name], profile=True)
                    for name in ("derived_before", "derived_after")}
        profiles["stock"] = run_step(specs["stock"], ROOT, profile=True)
    load.append(os.getloadavg()[0])

    median = {name: statistics.median(r["step_s"] for r in results) for name, results in eager.items()}
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_1min": load}, "torch": torch.__version__,
        "before": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True,
                                 text=True, check=True).stdout.strip(),
        "after": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip(),
        "seconds": round(time.time() - started),
        "genotype": str(GENOTYPE.relative_to(ROOT)),
        "widths": widths,
        "step": {key: specs["stock"][key] for key in ("patch", "batch", "input_channels", "num_classes")},
        "eager": eager, "eager_median_s": median, "compiled": compiled, "profiles": profiles,
        "ratios": {"derived_before / stock": median["derived_before"] / median["stock"],
                   "derived_after / stock": median["derived_after"] / median["stock"],
                   "derived_after / derived_before": median["derived_after"] / median["derived_before"]},
    }
    if compiled:
        report["ratios"]["derived compiled / derived eager"] = compiled["derived_after"]["step_s"] / median["derived_after"]
        report["ratios"]["stock compiled / stock eager"] = compiled["stock"]["step_s"] / median["stock"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "derived_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "derived_speed.md").write_text(markdown(report))
    print((args.out / "derived_speed.md").read_text())


def markdown(r) -> str:
    m = r["machine"]
    lines = ["# The derived network's training step against nnU-Net's stock network", "",
             f"Command: `{r['command']}`  ", f"Date: {r['date']} ({r['seconds']} s)  ",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores; 1-min load average at the start, after "
             f"each part: {m['load_average_1min']}  ",
             f"torch {r['torch']}; code before: `{r['before']}`, after: `{r['after']}`; genotype `{r['genotype']}`", "",
             "## Matched widths (meta device; FLOPs of one forward pass per patch, memory estimated at the plan's "
             "batch with CUDA autocast dtypes)", "",
             "| plan | match | stem width | stock GFLOPs | derived GFLOPs | stock params (M) | derived params (M) "
             "| stock memory (GiB) | derived memory (GiB) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for plan, rows in r["widths"].items():
        for match, w in rows.items():
            if "refused" in w:
                lines.append(f"| {plan} | {match} | refused: {w['refused']} |||||||")
                continue
            lines.append(f"| {plan} ({'x'.join(map(str, w['patch']))}, batch {w['batch']}) | {match} | "
                         f"{w['stem_width']} | {w['stock_flops'] / 1e9:.1f} | {w['derived_flops'] / 1e9:.1f} | "
                         f"{w['stock_parameters'] / 1e6:.2f} | {w['derived_parameters'] / 1e6:.2f} | "
                         f"{w['stock_training_memory'] / GIB:.2f} | {w['derived_training_memory'] / GIB:.2f} |")
    s = r["step"]
    lines += ["", f"## CPU training step at the embedded brain plan ({'x'.join(map(str, s['patch']))}, batch "
              f"{s['batch']}, {s['input_channels']} channels, {s['num_classes']} classes; one thread, channels-last; "
              "the derived network FLOPs-matched)", "",
              "| network | median step (s) | steps per round (s) | leaf modules |", "|---|---:|---|---:|"]
    for name, results in r["eager"].items():
        rounds = ", ".join(f"{x['step_s']:.3f}" for x in results)
        lines.append(f"| {name} (eager) | {r['eager_median_s'][name]:.3f} | {rounds} | {results[0]['modules']} |")
    for name, result in r["compiled"].items():
        lines.append(f"| {name} (torch.compile, inductor) | {result['step_s']:.3f} | compile + first step "
                     f"{result['first_step_s']:.0f} s | {result['modules']} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in r["ratios"].items()]
    lines += ["", "## Where a step's time goes (self CPU time, one step; torch.profiler)", ""]
    for name, prof in r["profiles"].items():
        lines += [f"{name} ({prof['total_ms']:.0f} ms):", "", "| op | share | calls | ms |", "|---|---:|---:|---:|"]
        lines += [f"| `{e['op']}` | {100 * e['share']:.1f} % | {e['calls']} | {e['ms']:.0f} |" for e in prof["profile"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
