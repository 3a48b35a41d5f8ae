"""`nnunet-scnas estimate` and the search trainer's choice of checkpointed cells."""
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunet_scnas.cli.main import main
from nnunet_scnas.errors import UserError
from nnunet_scnas.memory import GiB, MemoryEstimate
from nnunet_scnas.nnunet import memory_estimate
from nnunet_scnas.nnunet.memory_estimate import (USABLE_FRACTION, SearchEstimates, choose_memory_mode,
                                                decide_memory_mode, least_available)
from nnunet_scnas.supernet import SCNASSupernet


def _estimate(gib: float) -> MemoryEstimate:
    return MemoryEstimate(0, 0, 0, int(gib * GiB), 0)


# a search whose first samples need 25 GiB plain (12 lean, 10 with checkpointed cells) and its worst case of the op
# choices 40 (20, 16)
SEARCH = SearchEstimates(typical={"plain": _estimate(25), "lean": _estimate(12), "cells": _estimate(10)},
                         worst={"plain": _estimate(40), "lean": _estimate(20), "cells": _estimate(16)},
                         worst_ops=("max_pool_3x3x3", "conv_3x3x3"))


@pytest.mark.parametrize("setting, available_gib, expected", [
    ("auto", 50, "plain"),  # the plain search fits, even in the worst case
    ("auto", 35, "lean"),  # the first samples would fit plain, the worst case only lean
    ("auto", 20, "cells"),  # only with checkpointed cells
    ("cells", 50, "cells"),  # obeyed
    ("plain", 35, "plain"),  # obeyed, with a warning: its worst case does not fit
])
def test_the_memory_mode_is_chosen_on_the_worst_case(setting, available_gib, expected):
    chosen, line = choose_memory_mode(setting, SEARCH, int(available_gib * GiB), "do X")
    assert chosen == expected
    assert "40.0 / 20.0 / 16.0 GiB" in line and "max_pool_3x3x3 and conv_3x3x3" in line
    assert "25.0 / 12.0 / 10.0 GiB" in line and "on this GPU" in line
    assert ("WARNING" in line) == (setting == "plain" and 40 > USABLE_FRACTION * available_gib)


def test_a_search_that_fits_nowhere_says_what_to_do():
    with pytest.raises(UserError, match="the least of 2 GPUs even with checkpointed cells.*: use two GPUs"):
        choose_memory_mode("auto", SEARCH, 15 * GiB, "use two GPUs", ranks=2)  # the first samples would fit
    with pytest.raises(UserError, match="'auto', 'plain', 'lean', 'cells'"):
        choose_memory_mode(True, SEARCH, 10 * GiB, "")


def _least_on_rank(rank: int, port: int, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = least_available((30 if rank == 0 else 20) * GiB, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_all_ranks_decide_on_the_smallest_free_memory():
    assert least_available(7, torch.device("cpu")) == (7, 1)  # one process: its own figure
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_least_on_rank, args=(port, results), nprocs=2)
        assert dict(results) == {0: (20 * GiB, 2), 1: (20 * GiB, 2)}


class _SearchTrainer:
    """What `decide_memory_mode` reads of a search trainer, for a tiny plan."""
    search_seed, tau_start, stem_width, batch_size, num_input_channels = 0, 5.0, 4, 2, 2
    plans_manager = None
    label_manager = SimpleNamespace(num_segmentation_heads=3)
    enable_deep_supervision = True

    def __init__(self, device):
        self.device = torch.device(device)
        self.configuration_manager = SimpleNamespace(patch_size=[16, 32, 32])

    def build_network_architecture(self, *args):
        return SCNASSupernet(2, 3, self.stem_width, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])


def test_the_search_trainer_decides_from_its_own_network_on_cuda(monkeypatch):
    # no GPU needed: the estimate is made on the meta device (once: it takes a minute on a busy CPU), and the
    # free memory is given. Between the plain search's first samples and its worst case, "auto" recomputes.
    estimates = memory_estimate.search_step_estimates(
        _SearchTrainer("cuda").build_network_architecture, [2, 2, 16, 32, 32], 0, 5.0)
    monkeypatch.setattr(memory_estimate, "search_step_estimates", lambda *args: estimates)
    typical, worst = estimates.typical["plain"].total, estimates.worst["plain"].total
    assert typical < worst
    between = (typical + worst) / 2 / USABLE_FRACTION
    for setting, available, expected in [("auto", 4 * GiB, "plain"), ("lean", 4 * GiB, "lean"),
                                         ("plain", between, "plain")]:
        chosen, line = decide_memory_mode(_SearchTrainer("cuda"), setting, available=int(available))
        assert chosen == expected and "worst case of the op choices" in line
    chosen, _ = decide_memory_mode(_SearchTrainer("cuda"), "auto", available=int(between))
    assert chosen in ("lean", "cells") and estimates.worst[chosen].total <= USABLE_FRACTION * between
    smallest = min(estimates.worst[mode].total for mode in ("lean", "cells"))
    with pytest.raises(UserError, match="even with checkpointed cells.*-num_gpus N"):
        decide_memory_mode(_SearchTrainer("cuda"), "auto", available=int(0.99 * smallest))


def test_off_the_gpu_a_mode_given_is_obeyed_and_auto_is_plain():
    assert decide_memory_mode(_SearchTrainer("cpu"), "auto")[0] == "plain"
    assert decide_memory_mode(_SearchTrainer("cpu"), "cells")[0] == "cells"


def _peaks(out: str, prefix: str) -> list[float]:
    """The peak column (GiB) of the printed rows that start with `prefix`."""
    return [float(line.split()[-1]) for line in out.splitlines() if line.startswith(prefix)]


def test_estimate_prints_stock_search_and_derived_rows(private_plans, capsys):
    assert main(["estimate", "-d", "951", "-tr", "nnUNetTrainerSCNASSearch_cpu"]) == 0
    out = capsys.readouterr().out
    assert "batch 2 per GPU" in out and "CUDA autocast" in out
    assert len(_peaks(out, "stock nnU-Net (3d_fullres)")) == 1 and "PlainConvUNet" in out
    search, lean, checkpointed, worst, worst_lean, worst_checkpointed = _peaks(
        out, "search (nnUNetTrainerSCNASSearch_cpu)")
    assert 0 < max(lean, checkpointed) < search < worst and max(worst_lean, worst_checkpointed) < worst
    assert "stem 8, first samples, checkpointed cells" in out and "stem 8, worst case, lean" in out
    assert "worst case = every edge sampling max_pool_3x3x3 and" in out

    assert main(["export-plans", "-d", "951", "-g", "plain_unet", "--width", "16"]) == 0
    capsys.readouterr()
    assert main(["estimate", "-d", "951", "-c", "3d_fullres_scnas", "--batch-size", "1", "--fp32"]) == 0
    out = capsys.readouterr().out
    assert "batch 1 per GPU" in out and "float32" in out
    derived = [line for line in out.splitlines() if line.startswith("derived (3d_fullres_scnas)")]
    assert len(derived) == 3 and "stem 16" in derived[0] and "lean" in derived[1] and "checkpointed" in derived[2]
    assert "auto: the fastest mode that fits the GPU" in derived[0]  # export-plans' default mode
    plain, lean, checkpointed = _peaks(out, "derived (3d_fullres_scnas)")
    assert checkpointed <= lean < plain  # printed to 0.01 GiB: at this tiny plan lean and cells may tie


def _old_layout(plans_file, exported: bytes):
    plans = json.loads(exported)
    del plans["configurations"]["3d_fullres_scnas"]["architecture"]["arch_kwargs"]["cell_layout"]
    plans_file.write_text(json.dumps(plans))


@pytest.mark.parametrize("arguments, expected", [
    (["-d", "951", "--stem-width", "6"], "multiple of 4"),
    (["-d", "951", "--batch-size", "0"], "at least 1"),
    (["-d", "951", "-tr", "nnUNetTrainer"], "not an SCNAS search trainer"),
    (["-d", "951", "-tr", "NoSuchTrainer"], "not found"),
    (["-d", "951", "-c", "3d_lowres"], "no configuration '3d_lowres'"),
    (["-d", "960"], "plan and preprocess the dataset first"),
    (["-d", "951", "-c", "3d_fullres_scnas"], "old cell layout"),
])
def test_bad_input_is_one_line(arguments, expected, private_plans, plain_unet_exported, capsys):
    (Path(os.environ["nnUNet_raw"]) / "Dataset960_NotPreprocessed").mkdir()
    if "3d_fullres_scnas" in arguments:
        _old_layout(private_plans, plain_unet_exported)
    capsys.readouterr()
    before = private_plans.read_bytes()
    assert main(["estimate", *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert private_plans.read_bytes() == before


def _seconds_and_hours(line: str) -> tuple[float, list[float]]:
    seconds = float(line.split(": ")[1].split(" s/iteration")[0])
    return seconds, [float(part.split(" h")[0].split()[-1]) for part in line.split("; ")[1].split(", ")]


def test_estimate_time_times_the_cpu_and_says_so(exported_plans, capsys):
    assert main(["estimate", "-d", "951", "-c", "3d_fullres_scnas", "-tr", "nnUNetTrainerSCNASSearch_cpuQuick",
                 "--time"]) == 0
    out = capsys.readouterr().out
    print(out)  # the timings, for the record of this run
    assert "time on the CPU: no GPU found, so these are CPU figures" in out
    timed = {line.split(" (")[0]: line for line in out.splitlines() if "s/iteration" in line}
    assert set(timed) == {"search", "derived", "stock nnU-Net"}
    assert "memory mode plain" in timed["search"] and "not compiled" in timed["derived"]
    # the hours are the seconds per iteration times the schedule: the quick variant's 2 x 2, nnU-Net's 1000 x 250
    assert "2 epochs x 2 = " in timed["search"] and "one fold 1000 x 250 = " in timed["stock nnU-Net"]
    for name, iterations in [("search", [4]), ("derived", [250_000, 1_250_000]), ("stock nnU-Net", [250_000, 1_250_000])]:
        seconds, hours = _seconds_and_hours(timed[name])
        rounding = 10 ** (math.floor(math.log10(seconds)) - 2) / 2  # seconds are printed to 3 figures
        for printed, count in zip(hours, iterations, strict=True):
            # the hours come from the unrounded seconds and are printed to 0.1 h
            assert abs(printed - seconds * count / 3600) <= rounding * count / 3600 + 0.05 + 1e-9


def test_estimate_time_skips_what_would_not_fit_the_free_ram(private_plans, monkeypatch):
    from nnunet_scnas.nnunet import time_estimate
    from nnunet_scnas.nnunet.memory_estimate import EstimateRow, PlanEstimate, resolve_plan

    monkeypatch.setattr(time_estimate, "_available_ram", lambda: 2 ** 20)
    rows = [EstimateRow("stock nnU-Net (3d_fullres)", "PlainConvUNet", _estimate(0.01))]
    estimate = PlanEstimate("D", "3d_fullres", (8, 8, 8), 2, True, rows, SEARCH)  # what a real one holds, at 1 MiB
    lines = list(time_estimate.time_plan(resolve_plan("951"), estimate, torch.device("cpu")))
    assert "no GPU found" in lines[0]
    assert len(lines) == 3 and all("more than this machine's free RAM" in line for line in lines[1:])
