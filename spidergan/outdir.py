"""Output folders of stages whose outputs DVC does not persist (crop, mask).

DVC removes such an output before it runs the stage, so a stage there always starts empty and
resume code could never run. Run by hand (`spidergan crop`), the same start keeps a second run
from mixing with the first: what the stage writes is removed first, and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_dir(out: str | Path, files: tuple[str, ...], folders: tuple[str, ...]) -> Path:
    """`out` created, with the stage's own `files` and `folders` in it removed."""
    out = Path(out)
    for name in files:
        (out / name).unlink(missing_ok=True)
    for name in folders:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out
