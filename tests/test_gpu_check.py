"""The prepared GPU check (`benchmarks/gpu_check.py`), run as its dry run: the same code at a tiny size on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_runs_every_section_and_writes_its_report(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_cpu_dry_run.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["estimates", "search, plain", "search, lean", "search, cells",
                              "search worst case, lean", "search worst case, cells", "search worst case, plain",
                              "stock PlainConvUNet", "FLOPs-matched width", "derived network, torch.compile"]
    assert all(s["status"] == "ok" for s in sections.values()), {k: s["status"] for k, s in sections.items()}
    assert sections["estimates"]["worst_plain_gib"] > sections["estimates"]["typical_plain_gib"]
    assert sections["search worst case, plain"]["ops"] == sections["estimates"]["worst_ops"]
    assert all(s["seconds_per_iteration"] > 0 and s["scales_finite"] for name, s in sections.items()
               if name not in ("estimates", "FLOPs-matched width"))
    assert sections["derived network, torch.compile"]["compile_backend"] == "eager"
    assert report["command"].endswith(f"--dry-run --out {tmp_path}") and report["versions"]["torch"]
    assert "| search worst case, plain | ok |" in (tmp_path / "gpu_check_cpu_dry_run.md").read_text()


def test_gpu_check_refuses_to_run_without_a_gpu_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin"})
    assert done.returncode == 1 and "no CUDA GPU here" in done.stderr and not list(tmp_path.iterdir())
