"""On the CPU, networks train in channels-last layout: the same computation, much faster for SCNAS's ops."""
import torch


def channels_last_on_cpu(network: torch.nn.Module, device: torch.device) -> None:
    """Store the conv weights of `network` channels-last when it trains on the CPU; convs then run in that layout.

    Measured on 2 CPU cores (forward + backward, patch 24x48x40, batch 2): the derived network of the demo's
    genotype 7.5 -> 4.1 s, the search supernet 2.9 -> 1.4 s (depthwise dilated convs and pools have fast
    channels-last kernels), nnU-Net's PlainConvUNet 0.67 -> 0.73 s. GPUs keep nnU-Net's default layout.
    Parameters are converted in place, so an optimizer built on them stays valid.
    """
    if device.type == "cpu":
        network.to(memory_format=torch.channels_last_3d)
