"""An exported configuration's memory mode: recorded in the plans, built by nnU-Net's own builder, and "auto" decided
from the recorded estimates and the GPU's free memory."""
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from helpers import random_genotype
from nnunet_scnas.macro import MEMORY_MODES
from nnunet_scnas.nnunet.export.plans_export import scnas_configuration
from nnunet_scnas.nnunet.memory_mode import USABLE_FRACTION, choose_memory_mode

GiB = 2 ** 30
ESTIMATES = {"plain": 10 * GiB, "lean": 4 * GiB, "cells": 3 * GiB}


def _build(memory_mode, estimates=None):
    architecture = scnas_configuration("3d_fullres", random_genotype(1), 8, [[1, 1, 1], [2, 2, 2], [2, 2, 2],
                                                                            [2, 2, 2]], memory_mode,
                                       estimates)["architecture"]
    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture["_kw_requires_import"], 1, 2, deep_supervision=True)


@pytest.mark.parametrize("mode", MEMORY_MODES)
def test_a_recorded_mode_round_trips_through_nnunets_builder(mode):
    assert _build(mode).memory_mode == mode


@pytest.mark.parametrize("free_gib, chosen", [(40, "plain"), (10, "lean"), (4.5, "lean"), (4.4, "cells"),
                                              (3.4, "cells"), (1, "cells")])
def test_auto_takes_the_fastest_mode_that_fits(free_gib, chosen):
    mode, line = choose_memory_mode(ESTIMATES, free_gib * GiB)
    assert mode == chosen
    fits = ESTIMATES[chosen] <= USABLE_FRACTION * free_gib * GiB
    assert ("may not fit" in line) == (not fits)


def test_auto_is_decided_from_the_free_gpu_memory_where_nnunet_builds_the_network(monkeypatch, capsys):
    assert _build("auto", ESTIMATES).memory_mode == "plain"  # no CUDA: plain
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *device: (6 * GiB, 80 * GiB))
    assert _build("auto", ESTIMATES).memory_mode == "lean"
    assert "memory mode auto: lean" in capsys.readouterr().out


def test_auto_without_estimates_is_one_line():
    with pytest.raises(SystemExit, match="memory_estimates .* re-export it"):  # one line on stderr, exit code 1
        _build("auto", None)
