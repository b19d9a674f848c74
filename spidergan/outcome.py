"""What a stage made, said to people: its counts by reason, and no success with nothing made.

Every stage prints one summary line with what it wrote and what it left out by reason
(`summary`). A stage whose output would be empty does not exit 0: it raises `EmptyOutput`
naming the counts that emptied it, e.g.

    scrape: all 491 images rejected: too_small 491 (scrape.min_side 256; largest image 224 px)

Errors meant for people (this one, missing labels, a missing weight file, a source that cannot
run) carry `for_people = True`; `install_hook` (called by `env.setup`, so by every stage script)
prints them as one message without a traceback, and the process still exits 1, so DVC stops.
"""

from __future__ import annotations

import sys


class EmptyOutput(RuntimeError):
    """A stage would write an empty output; the message names the reason counts."""

    for_people = True


def reasons_text(reasons: dict) -> str:
    """`too_small 491, unreadable 2` (largest first), or `no input` for none."""
    items = sorted(((k, v) for k, v in reasons.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in items) or "no input"


def refuse_empty(stage: str, message: str, reasons: dict | None = None, hint: str = "") -> None:
    """Raise EmptyOutput as `<stage>: <message>: <reasons>` (+ hint in brackets)."""
    text = f"{stage}: {message}"
    if reasons is not None:
        text += f": {reasons_text(reasons)}"
    if hint:
        text += f" ({hint})"
    raise EmptyOutput(text)


def summary(stage: str, made: str, reasons: dict | None = None) -> str:
    """Print (and return) `<stage>: <made>; left out: <reasons>`."""
    line = f"{stage}: {made}"
    if reasons is not None:
        line += f"; left out: {reasons_text(reasons) if any(reasons.values()) else 'none'}"
    print(line, flush=True)
    return line


def install_hook() -> None:
    """Print errors marked `for_people` as their message alone (exit status stays 1)."""
    if getattr(sys.excepthook, "_spidergan", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if getattr(value, "for_people", False):
            print(f"error: {value}", file=sys.stderr, flush=True)
            return
        previous(kind, value, tb)

    hook._spidergan = True
    sys.excepthook = hook
