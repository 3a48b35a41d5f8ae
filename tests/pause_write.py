"""Run a console script of this environment with one file's write stopped half-way, as a kill would find it.

    python pause_write.py NAME N MARKER COMMAND [ARGS...]

What the plugin writes (and the search's checkpoints) goes to a temporary file first, which `os.replace` then
renames onto its name. Here the N-th rename onto a file named NAME first cuts the temporary file to half its
size, then creates MARKER and sleeps: the test that waits for MARKER kills the process mid-write.
"""
import os
import runpy
import sys
import time
from pathlib import Path

name, occurrence, marker, command = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
renames = 0
real_replace = os.replace


def replace(source, destination, *args, **kwargs):
    global renames
    if Path(destination).name == name:
        renames += 1
        if renames == occurrence:
            os.truncate(source, os.path.getsize(source) // 2)
            marker.touch()
            time.sleep(3600)
    return real_replace(source, destination, *args, **kwargs)


os.replace = replace
sys.argv = command
runpy.run_path(command[0], run_name="__main__")
