"""Headless Chromium on a local HTML file: a screenshot of a report (for docs/), and the runs its test makes.

Every run is isolated and offline: a fresh profile folder, and a host resolver that resolves nothing, so
a page that tried to fetch anything from the network would visibly lack it.
"""
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from nnunet_scnas.atomic import atomic_path
from nnunet_scnas.errors import UserError

CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium"
TIMEOUT_S = 120


def find_chromium() -> str | None:
    """The path of a Chromium on PATH, or None."""
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def run_headless(html_path, *arguments: str, user_data_dir=None,
                 timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run headless Chromium with `arguments` (e.g. "--dump-dom") on the file `html_path`; text output.

    `user_data_dir` is the profile folder (a temporary one, removed afterwards, if None). UserError if no
    Chromium is installed; on timeout the browser and its child processes are killed and TimeoutExpired raised.
    """
    chromium = find_chromium()
    if chromium is None:
        raise UserError(f"chromium is not installed: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as temporary:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   f"--user-data-dir={user_data_dir or temporary}", "--host-resolver-rules=MAP * ~NOTFOUND",
                   *arguments, Path(html_path).resolve().as_uri()]
        # its own process group: on timeout the renderer and GPU processes go too, not just the launcher
        # Chromium writes caches and settings under the home folder whatever its profile folder: keep them in
        # the temporary folder too, so that a report never writes outside the folders it was given
        env = {**os.environ, "HOME": temporary, "XDG_CONFIG_HOME": os.path.join(temporary, ".config"),
               "XDG_CACHE_HOME": os.path.join(temporary, ".cache")}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, env=env)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def screenshot(html_path, png_path, width: int = 1200, height: int = 2000) -> Path:
    """Write a PNG of the top `width` x `height` pixels of the page `html_path` to `png_path` (atomically).

    RuntimeError, with the end of Chromium's output, if it wrote no picture.
    """
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        shot = tmp.with_name(tmp.name + ".png")  # chromium picks the image format by the file's extension
        try:
            result = run_headless(html_path, f"--screenshot={shot}", f"--window-size={width},{height}",
                                  "--hide-scrollbars")
            if result.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
                raise RuntimeError(f"chromium wrote no screenshot of {html_path} (exit code {result.returncode}): "
                                   f"{result.stderr[-2000:]}")
            os.replace(shot, tmp)
        finally:
            shot.unlink(missing_ok=True)
    return png_path
