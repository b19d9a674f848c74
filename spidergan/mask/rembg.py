"""rembg as a masker, offline: finding a model's weights without fetching them (a missing file
fails at once with the command that fetches it), placing a custom ONNX file where rembg takes it,
and one session per run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spidergan import atomic
from spidergan.digest import file_sha256
from spidergan.mask.base import Masker, MaskError
from spidergan.params import MaskParams

# rembg sessions that cannot run from a model name alone: custom ones need a file (use
# mask.model_path), sam needs point prompts, and remote ones send the image away.
_NOT_BY_NAME = {"u2net_custom", "dis_custom", "ben_custom", "sam"}


class MissingWeights(MaskError):
    """rembg weights absent from the local cache; never downloaded at run time."""

    def __init__(self, model: str, file: Path, url: str):
        self.model, self.file, self.url = model, Path(file), url
        self.command = f"mkdir -p {_show(self.file.parent)} && curl -L -o {_show(self.file)} {url}"
        super().__init__(
            f"rembg model {model!r} needs its weights file {_show(self.file)}, which is missing; "
            f"weights are never downloaded at run time. Fetch it once with:\n"
            f"    {self.command}\n"
            f"or choose mask.method: grabcut, which needs no weights.")


def _show(path: Path) -> str:
    """A path relative to the working directory when it lies inside it (shorter messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def rembg_home() -> Path:
    """rembg's model home. env.setup() points U2NET_HOME inside the project's state folder."""
    from rembg.sessions.base import BaseSession

    return Path(BaseSession.rembg_home())


class _WouldFetch(Exception):
    def __init__(self, url: str, fname: str, path: str):
        super().__init__(url)
        self.url, self.fname, self.path = url, fname, path


def rembg_weights(model: str) -> Path:
    """The local weights file of rembg model `model`; MissingWeights when it is not there.

    rembg's own `download_models` is asked where the file lies, with `pooch.retrieve` swapped
    for a stub that reports what it would fetch (URL and file name come from rembg's source,
    so they follow its version) instead of touching the network. Folders rembg creates on the
    way are removed again when the file is missing.
    """
    import pooch
    from rembg.sessions import sessions

    cls = sessions.get(model)
    usable = sorted(n for n, c in sessions.items()
                    if n not in _NOT_BY_NAME and c.is_local() and not c.requires_credentials())
    if cls is None or model not in usable:
        why = "custom models load from a file: set mask.model_path" if model in _NOT_BY_NAME \
            else "it is not a local rembg model"
        raise MaskError(f"mask.model {model!r} cannot be used ({why}); "
                        f"choose one of: {', '.join(usable)}")

    def stub(url, known_hash=None, fname=None, path=None, **kw):
        raise _WouldFetch(url, fname or url.rsplit("/", 1)[-1], path or cls.model_dir())

    home = Path(cls.rembg_home())
    before = _folders(home)
    real = pooch.retrieve
    pooch.retrieve = stub
    try:
        found = cls.download_models()
    except _WouldFetch as w:
        raise MissingWeights(model, Path(w.path) / w.fname, w.url) from None
    finally:
        pooch.retrieve = real
        _remove_new_empty(home, before)
    return Path(found[0] if isinstance(found, (tuple, list)) else found)


def _folders(root: Path) -> set[Path]:
    return {Path(d) for d, _, _ in os.walk(root)} if root.exists() else set()


def _remove_new_empty(root: Path, before: set[Path]) -> None:
    for d in sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only succeeds on empty folders
        except OSError:
            pass


def place_custom_model(path: str | Path) -> Path:
    """`path` as a file inside rembg's home (rembg refuses a model_path outside it).

    A file already inside is used as is; otherwise it is hard-linked (or, across file systems,
    copied) to `<home>/custom/<sha12>-<name>`, named by content so an edited file is re-placed.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise MaskError(f"mask.model_path: no such file: {src}")
    # rembg compares absolute (not resolved) paths, so do the same
    home = Path(os.path.abspath(rembg_home()))
    if os.path.abspath(src).startswith(str(home) + os.sep):
        return Path(os.path.abspath(src))
    dst = home / "custom" / f"{file_sha256(src)[:12]}-{src.name}"
    if not dst.exists():
        atomic.copy_file(src, dst, link=True)
    return dst


def open_rembg_session(p: MaskParams):
    """One rembg session for the run (loading the network is the expensive part)."""
    from rembg import new_session

    if p.model_path:
        return new_session("u2net_custom", model_path=str(place_custom_model(p.model_path)))
    rembg_weights(p.model)
    return new_session(p.model)


class RembgMasker(Masker):
    name = "rembg"

    def __init__(self, p: MaskParams, session=None):
        self.p = p
        self.session = session if session is not None else open_rembg_session(p)
        self.model = Path(p.model_path).name if p.model_path else p.model

    def __call__(self, img, record):
        from rembg import remove

        p = self.p
        if not p.alpha_matting:
            m = remove(img, session=self.session, only_mask=True, post_process_mask=p.post_process)
            return np.asarray(m.convert("L"), np.uint8).copy(), None
        # matting unmixes the edge colours too; its RGB is the foreground to composite
        cut = remove(img, session=self.session, alpha_matting=True,
                     alpha_matting_foreground_threshold=p.alpha_matting_foreground_threshold,
                     alpha_matting_background_threshold=p.alpha_matting_background_threshold,
                     alpha_matting_erode_size=p.alpha_matting_erode_size,
                     post_process_mask=p.post_process).convert("RGBA")
        return np.asarray(cut.getchannel("A"), np.uint8).copy(), cut.convert("RGB")
