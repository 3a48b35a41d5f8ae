"""Run by `nnunet_scnas_trainers.pth` at interpreter start in an environment where the wheel is installed.

It makes `nnUNetv2_train ... -tr nnUNetTrainerSCNASSearch` find our trainers with nothing exported by
hand, through nnU-Net's own `nnUNet_extTrainer` variable. Never fails the interpreter start.
"""
try:
    from nnunet_scnas.locations import register_trainers, trainers_dir

    if trainers_dir().is_dir():
        register_trainers()
except Exception:  # a broken plugin must not break every Python process in the environment
    pass
