import os
import shlex

from nnunet_scnas.locations import EXT_TRAINER_VARIABLE, ext_trainer_paths, trainers_dir

NAME = "env"
HELP = "print the shell line that lets nnU-Net's commands find our trainers (eval \"$(nnunet-scnas env)\")"


def add_arguments(parser):
    pass


def run(args) -> int:
    # An installed wheel registers the folder at interpreter start already; printing the line anyway
    # keeps `eval "$(nnunet-scnas env)"` right for source checkouts and editable installs too.
    others = [p for p in ext_trainer_paths() if os.path.abspath(p) != str(trainers_dir())]
    value = os.pathsep.join(others + [str(trainers_dir())])
    print(f"export {EXT_TRAINER_VARIABLE}={shlex.quote(value)}")
    return 0
