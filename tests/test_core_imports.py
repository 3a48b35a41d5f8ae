"""The core is pure PyTorch: importing it never imports nnU-Net (docs/architecture.md, "Layers")."""
import subprocess
import sys

CORE_MODULES = ["ops", "sampler", "genotype", "cell", "macro", "supernet", "derived", "flops", "drawing", "memory",
                "search_memory"]

SCRIPT = f"""
import importlib, sys

class Forbid:
    attempts = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nnunetv2", "dynamic_network_architectures"):
            Forbid.attempts.append(name)
            raise ImportError("the core must not import " + name)
        return None

sys.meta_path.insert(0, Forbid())
import nnunet_scnas
assert "torch" not in sys.modules, "import nnunet_scnas must stay lazy"
for name in {CORE_MODULES!r}:
    importlib.import_module("nnunet_scnas." + name)
for name in nnunet_scnas.__all__:
    getattr(nnunet_scnas, name)
assert not Forbid.attempts, Forbid.attempts
assert not any(m.split(".")[0] in ("nnunetv2", "dynamic_network_architectures") for m in sys.modules)
print("ok")
"""


def test_core_imports_without_nnunet():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
