"""The search's 4:1 split of a fold's training cases into a weight set and an architecture set.

The fold's validation cases never enter the search; they stay untouched for nnU-Net's final evaluation.
"""
import random
from pathlib import Path

from nnunet_scnas.atomic import write_json
from nnunet_scnas.errors import UserError, exit_on_user_error
from nnunet_scnas.json_input import read_json

SPLIT_FILE = "bilevel_split.json"
START_AFRESH = "delete it (and the fold's checkpoints) to start the search afresh"
MIN_TRAINING_CASES = 5  # 4:1 needs at least one architecture case and four weight cases


def split_weight_and_architecture(case_ids, seed: int, architecture_fraction: float = 0.2):
    """Deterministic for (set of cases, seed): returns (weight_ids, architecture_ids), both sorted."""
    case_ids = sorted(case_ids)
    if len(case_ids) < MIN_TRAINING_CASES:
        raise UserError(f"the search splits the fold's training cases 4:1 into weight and architecture sets, "
                        f"which needs at least {MIN_TRAINING_CASES} cases; this fold has {len(case_ids)}: "
                        f"use a dataset with more cases")
    shuffled = list(case_ids)
    random.Random(seed).shuffle(shuffled)
    num_architecture = max(1, round(architecture_fraction * len(shuffled)))
    return sorted(shuffled[num_architecture:]), sorted(shuffled[:num_architecture])


def load_or_make_split(output_folder, case_ids, validation_ids, seed: int, save: bool = True):
    """Reuse the split saved in the fold folder (so a resumed search keeps it), else make one and, if `save`,
    save it. The split is deterministic, so the ranks of a multi-GPU search agree on it; only rank 0 saves.

    A saved split is checked first: it must hold exactly the fold's training cases, and never one of its
    validation cases (`validation_ids`), which the search may not see."""
    path = Path(output_folder) / SPLIT_FILE
    if path.is_file():
        weight, architecture = _read_split(path)
        leaked = sorted(set(weight + architecture) & set(validation_ids))
        if leaked:
            raise UserError(f"{path} puts {len(leaked)} of the fold's validation cases ({', '.join(leaked[:3])}"
                            f"{', ...' if len(leaked) > 3 else ''}) into the search, which may never see them: "
                            f"{START_AFRESH}")
        if sorted(weight + architecture) != sorted(case_ids):
            raise UserError(f"{path} was made for other training cases than this fold's: {START_AFRESH}")
        return weight, architecture
    weight, architecture = split_weight_and_architecture(case_ids, seed)
    if save:
        write_json(path, {"seed": seed, "weight": weight, "architecture": architecture})
    return weight, architecture


def _read_split(path: Path) -> tuple[list[str], list[str]]:
    try:
        saved = read_json(path, "search split")
    except ValueError as error:
        raise UserError(f"{error}; {START_AFRESH}") from None
    sets = [saved.get(key) if isinstance(saved, dict) else None for key in ("weight", "architecture")]
    if not all(isinstance(cases, list) and all(isinstance(c, str) for c in cases) for cases in sets):
        raise UserError(f"{path} is not a search split (lists 'weight' and 'architecture' of case ids): "
                        f"{START_AFRESH}")
    return sets[0], sets[1]


def describe_split(weight_cases, architecture_cases) -> str:
    return (f"Search split of the fold's {len(weight_cases) + len(architecture_cases)} training cases: "
            f"{len(weight_cases)} weight, {len(architecture_cases)} architecture "
            f"(the fold's validation cases are not used by the search)")


def search_datasets(trainer):
    """A search trainer's weight-set and architecture-set datasets (nnU-Net's "train" and "val" datasets): its
    fold's training cases split 4:1, the split saved in the fold folder (rank 0) and logged."""
    fold_training_cases, fold_validation_cases = trainer.do_split()
    with exit_on_user_error():
        split = load_or_make_split(trainer.output_folder, fold_training_cases, fold_validation_cases,
                                   trainer.search_seed, save=trainer.local_rank == 0)
    trainer.print_to_log_file(describe_split(*split))
    return tuple(trainer.dataset_class(trainer.preprocessed_dataset_folder, cases,
                                       folder_with_segs_from_previous_stage=trainer.folder_with_segs_from_previous_stage)
                 for cases in split)
