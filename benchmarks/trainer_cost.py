"""Time and peak memory per training iteration of nnU-Net trainers at one plan: the search vs stock nnU-Net.

Unlike `search_cost.py` (bare networks), this runs the trainers themselves, as `nnUNetv2_train` builds them:
nnU-Net's plan, dataloader, augmentation, loss, optimizer, autocast and grad scaler on a GPU. Each trainer runs
in its own process: `on_train_start()`, then `--warmup` + `--steps` calls of `train_step` on nnU-Net's batches.
One iteration is one `train_step`: a forward/backward/step for stock nnU-Net; a weight step plus an architecture
step (two forwards/backwards on two batches) for the search, as the paper counts them.

    time    median seconds of `train_step` (waiting for the next batch excluded; the search's second batch
            comes from nnU-Net's loader inside `train_step`, so its wait is included)
    memory  GPU: `torch.cuda.max_memory_allocated` over the timed steps (total, and above the memory held
            after `on_train_start`: model, optimizer states); CPU: the process's peak RSS (ru_maxrss)

Needs a planned and preprocessed dataset and nnU-Net's three path variables (results go to a temporary
folder). `--patch X Y Z` measures at another patch size than the plan's: it writes a plans file
(`nnUNetPlans_cost_XxYxZ`) whose configuration has that patch (and `--batch`), the stock network's topology
re-derived by nnU-Net's own rule for that patch, and the same preprocessed data (padded to the patch).

    python benchmarks/trainer_cost.py -d 901 --device cpu --trainers nnUNetTrainer nnUNetTrainerSCNASSearch_cpu
    python benchmarks/trainer_cost.py -d 901 --device cuda --patch 128 128 128 --batch 2 --label cuda_128
"""
import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerSCNASSearch", "nnUNetTrainerSCNASSearch_cpu")


def plans_for_patch(dataset: str, configuration: str, patch: list[int], batch: int | None) -> str:
    """Write a copy of nnUNetPlans with `configuration` at `patch` (and `batch`); returns its identifier."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_scnas.atomic import write_json

    folder = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(dataset)
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    config = plans["configurations"][configuration]
    _, strides, kernels, patch_size, _ = get_pool_and_conv_props(config["spacing"], patch, 4, 999999)
    if list(patch_size) != list(patch):
        raise SystemExit(f"patch {patch} does not fit nnU-Net's topology rule at spacing {config['spacing']}; "
                         f"nearest valid: {list(map(int, patch_size))}")
    strides, kernels = ([list(map(int, k)) for k in ks] for ks in (strides, kernels))
    stages = len(strides)
    config["patch_size"] = list(patch)
    config["batch_size"] = batch or config["batch_size"]
    config["architecture"]["arch_kwargs"].update({
        "n_stages": stages, "strides": strides, "kernel_sizes": kernels,
        "features_per_stage": [min(32 * 2 ** i, 320) for i in range(stages)],
        "n_conv_per_stage": [2] * stages, "n_conv_per_stage_decoder": [2] * (stages - 1)})
    identifier = f"nnUNetPlans_cost_{'x'.join(map(str, patch))}"
    plans["plans_name"] = identifier
    write_json(folder / f"{identifier}.json", plans)
    return identifier


def run_one(args) -> None:
    """Measure one trainer in this process; write its result file."""
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="trainer_cost_")  # before nnunetv2 reads it
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    trainer = get_trainer_from_args(str(args.dataset), args.configuration, args.fold, args.run_one, args.plans,
                                    device=device)
    trainer.on_train_start()
    trainer.on_train_epoch_start()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    held = torch.cuda.memory_allocated() if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        batch = next(trainer.dataloader_train)
        sync()
        start = time.perf_counter()
        trainer.train_step(batch)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_total = torch.cuda.max_memory_allocated()
    else:
        peak_total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    network = trainer.network.module if trainer.is_ddp else trainer.network
    config = trainer.configuration_manager
    for loader in (trainer.dataloader_train, trainer.dataloader_val):  # stop nnU-Net's augmentation workers
        getattr(loader, "_finish", lambda: None)()
    Path(args.result_file).write_text(json.dumps({
        "trainer": args.run_one, "network": type(network).__name__,
        "parameters": sum(p.numel() for p in network.parameters()),
        "patch": list(config.patch_size), "batch": config.batch_size,
        "median_iteration_s": statistics.median(times), "iteration_times_s": times,
        "peak_memory_mib": peak_total / 2 ** 20, "peak_above_held_mib": (peak_total - held) / 2 ** 20,
        "held_after_start_mib": held / 2 ** 20}))
    os._exit(0)  # skip nnU-Net's end of training (checkpoint, validation)


def machine(device: str) -> str:
    import torch

    from search_cost import machine as cpu_machine
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    return f"{cpu_machine()['cpu']}, {os.cpu_count()} cores, CPU"


def markdown(report: dict) -> str:
    lines = [f"# Trainer cost per iteration: {report['label']}", "",
             f"Command: `{report['command']}`  ",
             f"Date: {report['date']}  ",
             f"Machine: {report['machine']}; torch {report['torch']}, nnunetv2 {report['nnunetv2']}  ",
             f"Dataset {report['dataset']}, configuration {report['configuration']}, plans {report['plans']}, "
             f"fold {report['fold']}; median of {report['steps']} iterations after {report['warmup']} warm-up.", "",
             "| trainer | network | parameters | patch | batch | s / iteration | peak memory (MiB) | "
             "above model + optimizer (MiB) |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in report["results"].values():
        if "error" in r:
            lines.append(f"| `{r['trainer']}` | failed: {r['error']} | | | | | | |")
            continue
        lines.append(f"| `{r['trainer']}` | {r['network']} | {r['parameters']:,} | {'x'.join(map(str, r['patch']))} | "
                     f"{r['batch']} | {r['median_iteration_s']:.3f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['peak_above_held_mib']:.0f} |")
    lines += ["", "One iteration: one `train_step`; for the search that is a weight step and an architecture step. "
              "CPU memory is the process's peak RSS (Python and libraries included).", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id (planned and preprocessed)")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("-f", "--fold", type=int, default=0)
    parser.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    parser.add_argument("--plans", default="nnUNetPlans")
    parser.add_argument("--patch", type=int, nargs=3, help="measure at this patch instead of the plan's")
    parser.add_argument("--batch", type=int, help="with --patch: batch size (default: the plan's)")
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (nnU-Net's -device cpu)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--label", help="results go to trainer_cost_<label>.md/.json (default: the device)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        return run_one(args)
    if args.patch:
        args.plans = plans_for_patch(args.dataset, args.configuration, args.patch, args.batch)

    from importlib.metadata import version

    import torch
    results, scratch = {}, Path(tempfile.mkdtemp(prefix="trainer_cost_"))
    for trainer in args.trainers:
        result_file, log_file = scratch / f"{trainer}.json", scratch / f"{trainer}.log"
        command = [sys.executable, __file__, "--run-one", trainer, "--result-file", str(result_file),
                   "-d", str(args.dataset), "-c", args.configuration, "-f", str(args.fold), "--plans", args.plans,
                   "--device", args.device, "--threads", str(args.threads), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
        # output to a file, not a pipe: nnU-Net's augmentation workers may outlive the process and hold a pipe
        with log_file.open("w") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if result_file.is_file():
            results[trainer] = json.loads(result_file.read_text())
            print(f"{trainer}: {results[trainer]['median_iteration_s']:.3f} s/iteration, "
                  f"peak {results[trainer]['peak_memory_mib']:.0f} MiB", flush=True)
        else:  # e.g. out of GPU memory: recorded, and the other trainers still run
            error = (log_file.read_text().strip().splitlines() or ["no output"])[-1][:200]
            results[trainer] = {"trainer": trainer, "error": error}
            print(f"{trainer}: failed: {error} (log: {log_file})", flush=True)

    label = args.label or args.device
    report = {"label": label, "command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(args.device), "torch": torch.__version__, "nnunetv2": version("nnunetv2"),
              "dataset": str(args.dataset), "configuration": args.configuration, "plans": args.plans,
              "fold": args.fold, "steps": args.steps, "warmup": args.warmup, "results": results}
    from nnunet_scnas.atomic import write_json, write_text
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"trainer_cost_{label}.json", report)
    write_text(args.out / f"trainer_cost_{label}.md", markdown(report))
    print(f"wrote {args.out / f'trainer_cost_{label}.md'}")


if __name__ == "__main__":
    main()
