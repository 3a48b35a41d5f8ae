"""Read a JSON file that a user may have edited, or that may not be what its name says, within bounds.

Genotypes, plans and the search's own records are read as JSON only (no pickle, no eval). A file over
`max_bytes` is refused before it is read, and nesting deeper than Python's parser takes (a "JSON bomb" of
brackets) is refused instead of raising RecursionError, so a hostile file can neither hang a command nor
fill its memory.
"""
import json
from pathlib import Path

MAX_BYTES = 64 * 2**20  # nnU-Net plans of real datasets are a few hundred KB


def read_json(path, what: str = "file", max_bytes: int = MAX_BYTES):
    """The parsed content of `path`; ValueError (one line, naming `what` and the path) when it is not JSON."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{what} {path} is {size / 2**20:.1f} MiB, more than such a file can be "
                         f"({max_bytes / 2**20:g} MiB): is it the right file?")
    try:
        return json.loads(path.read_bytes())
    except RecursionError:
        raise ValueError(f"{what} {path} is nested too deeply to be one: is it the right file?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} {path} is not JSON: {error}") from None
