import os
import shutil

NAME = "doctor"
HELP = "check the set-up (nnU-Net paths, trainer discovery, torch, plotting) and say how to fix what is wrong"

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# a trainer of ours that exists in every version of the plugin
PROBE_TRAINER = "nnUNetTrainerCPUBudget"


def add_arguments(parser):
    pass


def _check_path(variable):
    value = os.environ.get(variable)
    if not value:
        return False, f"{variable} is not set", f"export {variable}=/path/to/{variable} (see nnU-Net's setting_up_paths.md)"
    if not os.path.isdir(value):
        return False, f"{variable}={value} does not exist", f"mkdir -p {value}"
    if not os.access(value, os.W_OK):
        return False, f"{variable}={value} is not writable", f"fix the permissions of {value}"
    return True, f"{variable}={value}", None


def _check_discovery():
    from nnunet_scnas.locations import trainers_dir

    try:
        from nnunet_scnas.nnunet.commands import find_trainer_class

        trainer = find_trainer_class(PROBE_TRAINER)
    except Exception as error:  # nnU-Net raises RuntimeError, an import of ours may raise anything
        return False, f"nnU-Net cannot find our trainers ({type(error).__name__}: {str(error).splitlines()[0]})", \
            'eval "$(nnunet-scnas env)"  (or reinstall with a non-editable `pip install nnunet-scnas`)'
    return True, f"nnU-Net finds our trainers ({trainer.__name__} in {trainers_dir()})", None


def _check_torch():
    import torch

    if torch.cuda.is_available():
        return True, f"torch {torch.__version__}, CUDA device: {torch.cuda.get_device_name(0)}", None
    return True, f"torch {torch.__version__}, no CUDA device: train with `-device cpu` (slow; the demo is sized for it)", None


def _check_matplotlib():
    try:
        import matplotlib
    except ImportError:
        return False, "matplotlib is missing (plots of the search)", "pip install matplotlib"
    return True, f"matplotlib {matplotlib.__version__}", None


def _check_graphviz():
    dot = shutil.which("dot")
    if dot is None:
        # not a failure: cell drawings fall back to matplotlib
        return None, "graphviz `dot` not found: cell drawings use the matplotlib fallback", "apt-get install graphviz"
    return True, f"graphviz dot at {dot}", None


def run(args) -> int:
    checks = [lambda v=v: _check_path(v) for v in NNUNET_PATH_VARIABLES]
    checks += [_check_discovery, _check_torch, _check_matplotlib, _check_graphviz]
    failed = False
    for check in checks:
        ok, message, fix = check()
        tag = {True: "ok  ", False: "FAIL", None: "note"}[ok]
        print(f"[{tag}] {message}" + (f"  -> fix: {fix}" if ok is False or (ok is None and fix) else ""))
        failed |= ok is False
    return 1 if failed else 0
