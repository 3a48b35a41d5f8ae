"""nnunet-scnas: SCNAS (Kim et al., MICCAI 2019) architecture search as an nnU-Net v2 plugin.

The public names below are imported lazily, so that `import nnunet_scnas` stays cheap (it happens at
every interpreter start through the trainer-registration .pth file) and torch is loaded on first use.
"""
import importlib

__version__ = "0.1.0"

# public name -> module of the pure-PyTorch core that defines it
_EXPORTS = {
    "OPS": "ops",
    "build_op": "ops",
    "sample_two_ops": "sampler",
    "softmax_weights": "sampler",
    "argmax_weights": "sampler",
    "tau_schedule": "sampler",
    "CELL_TYPES": "genotype",
    "EDGES": "genotype",
    "Genotype": "genotype",
    "derive_genotype": "genotype",
    "random_genotype": "random_genotype",
    "Cell": "cell",
    "CELL_LAYOUT": "cell",
    "SCNASSupernet": "supernet",
    "SCNASUNet": "derived",
    "count_flops": "flops",
    "count_parameters": "flops",
    "match_width": "flops",
    "draw_cell": "drawing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
