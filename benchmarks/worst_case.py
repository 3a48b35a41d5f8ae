"""Is the search's worst case (every edge on the two dearest ops, `nnunet_scnas/search_worst_case.py`) really the
dearest sample? Every pair of ops on every edge, and random per-edge mixes of pairs, at BrainTumour's plan.

    python benchmarks/worst_case.py   # a few minutes on 2 CPU cores (meta tracing); writes worst_case.md/.json

Plain search step (no checkpointed cells), CUDA autocast dtypes, 128^3, 4 channels, stem 48, batch 1 (activations
grow with the batch, the ranking does not). Peaks are estimates (`search_memories`), not measurements.
"""
import datetime
import random
import shlex
import sys
from itertools import combinations
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_memory import BRAIN_TUMOUR, STRIDES_128  # noqa: E402

from nnunet_scnas.atomic import write_json, write_text  # noqa: E402
from nnunet_scnas.memory import GiB  # noqa: E402
from nnunet_scnas.nnunet.provenance import machine, versions  # noqa: E402
from nnunet_scnas.ops import OPS  # noqa: E402
from nnunet_scnas.search_memory import search_memories  # noqa: E402
from nnunet_scnas.search_worst_case import op_sample, random_pairs_sample, worst_case_ops  # noqa: E402
from nnunet_scnas.supernet import SCNASSupernet  # noqa: E402

BATCH = [1, BRAIN_TUMOUR["input_channels"], *BRAIN_TUMOUR["patch"]]
MIXES = 8


def main():
    with torch.device("meta"):
        supernet = SCNASSupernet(BRAIN_TUMOUR["input_channels"], BRAIN_TUMOUR["num_classes"], 48, STRIDES_128)

    def peak(sample) -> float:
        return search_memories(supernet, BATCH, [sample], tau=5.0, autocast=True, modes=("plain",))["plain"].total / GiB

    chosen = worst_case_ops(supernet, BATCH, 5.0, autocast=True)
    pairs = {" + ".join(pair): peak(op_sample(pair)) for pair in combinations(OPS, 2)}
    rng = random.Random(0)
    mixes = [peak(random_pairs_sample(rng)) for _ in range(MIXES)]
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "batch_shape": BATCH, "chosen": list(chosen),
              "chosen_gib": pairs[" + ".join(sorted(chosen, key=OPS.index))], "pairs_gib": pairs,
              "random_mixes_gib": mixes}
    write_json(HERE / "worst_case.json", report)
    ranked = sorted(pairs.items(), key=lambda item: -item[1])
    lines = ["# The search's worst case of the op choices (`worst_case.py`)", "",
             f"`{report['command']}`, {report['date']}; {report['machine']['cpu']}; torch {report['versions']['torch']}.",
             f"Plain search step at {BATCH} (BrainTumour's plan at batch 1, stem 48, CUDA autocast dtypes), estimated "
             f"on the meta device. Chosen by `worst_case_ops`: **{' + '.join(chosen)}** "
             f"({report['chosen_gib']:.2f} GiB). Dearest of {MIXES} random per-edge mixes of pairs: "
             f"{max(mixes):.2f} GiB.", "", "| ops on every edge | peak (GiB) |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in ranked]
    write_text(HERE / "worst_case.md", "\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
