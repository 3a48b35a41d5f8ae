"""Where the plugin's non-Python folders live, in a source checkout and in an installed wheel.

Standard library only: this module is imported at interpreter start (see `_site/`), so it must stay cheap.
"""
import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"


def _packaged_or_checkout(name: str) -> Path:
    # The wheel puts the folder inside the package; a checkout (or an editable install) has it beside it.
    inside = _PACKAGE_DIR / name
    return inside if inside.is_dir() else _PACKAGE_DIR.parent / name


def trainers_dir() -> Path:
    """The folder with our nnUNetTrainer subclasses, the one `nnUNet_extTrainer` must list."""
    return _packaged_or_checkout("trainers")


def plans_dir() -> Path:
    """The folder with the shipped genotypes."""
    return _packaged_or_checkout("plans")


def ext_trainer_paths(environ=os.environ) -> list[str]:
    return [p for p in environ.get(EXT_TRAINER_VARIABLE, "").split(os.pathsep) if p.strip()]


def is_registered(environ=os.environ) -> bool:
    ours = str(trainers_dir())
    return any(os.path.abspath(p) == ours for p in ext_trainer_paths(environ))


def register_trainers(environ=os.environ) -> None:
    """Append our trainer folder to `nnUNet_extTrainer`, keeping whatever the user listed first."""
    if not is_registered(environ):
        environ[EXT_TRAINER_VARIABLE] = os.pathsep.join(ext_trainer_paths(environ) + [str(trainers_dir())])
