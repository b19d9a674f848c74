"""The offline-safe environment every entry point (stage, CLI, test) sets up first.

Tool homes and caches (Ultralytics settings, rembg models, torch hub, matplotlib) live in one
ignored state folder at the project root, `.spidergan/`, never in the user's home directory.
Telemetry and auto-downloads are switched off so that nothing phones out by itself.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from spidergan import atomic

STATE_DIRNAME = ".spidergan"
_done = False


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder upwards holding dvc.yaml or params.yaml (DVC runs stages there)."""
    env = os.environ.get("SPIDERGAN_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").exists() or (d / "params.yaml").exists():
            return d
    return here


def state_dir(root: str | Path | None = None) -> Path:
    d = Path(root) / STATE_DIRNAME if root else project_root() / STATE_DIRNAME
    d.mkdir(parents=True, exist_ok=True)
    return d


def setup(root: str | Path | None = None) -> Path:
    """Set the offline-safe environment variables. Idempotent; returns the state folder."""
    global _done
    state = state_dir(root)
    defaults = {
        # each dvc command would otherwise spawn an analytics daemon that fails offline
        "DVC_NO_ANALYTICS": "1",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_VERBOSE": os.environ.get("YOLO_VERBOSE", "False"),
        "YOLO_CONFIG_DIR": str(state / "ultralytics"),
        "U2NET_HOME": str(state / "rembg"),
        "TORCH_HOME": str(state / "torch"),
        "MPLCONFIGDIR": str(state / "matplotlib"),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(state / "huggingface"),
        "WANDB_MODE": "disabled",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    for k in ("YOLO_CONFIG_DIR", "U2NET_HOME", "TORCH_HOME", "MPLCONFIGDIR"):
        Path(os.environ[k]).mkdir(parents=True, exist_ok=True)
    if os.environ.get("SPIDERGAN_NETGUARD") == "1":
        install_network_guard()
    from spidergan import outcome

    outcome.install_hook()  # errors for people print as a message, not a traceback
    _done = True
    return state


def configure_ultralytics(threads: int | None = None) -> None:
    """Ultralytics settings for offline use; call before the first YOLO object is built.

    `threads`: torch threads on CPU (0: every core this process may run on; None: Ultralytics'
    own choice, every core but one).

    Without a local Arial.ttf, Ultralytics requests the font from GitHub at every dataset
    check (a 3-second stall offline), so a local TTF is copied in under that name.
    """
    setup()
    # Ultralytics keeps its settings and fonts in $YOLO_CONFIG_DIR/Ultralytics (USER_CONFIG_DIR),
    # not in $YOLO_CONFIG_DIR itself: the font must go there or check_font still calls GitHub.
    cfg = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    cfg.mkdir(parents=True, exist_ok=True)
    font = cfg / "Arial.ttf"
    if not font.exists():
        src = _find_local_ttf()
        if src is not None:
            atomic.copy_file(src, font)
    from ultralytics import settings  # noqa: WPS433 (heavy import, only when detect runs)

    wanted = {"sync": False, "dvc": False, "clearml": False, "comet": False, "mlflow": False,
              "wandb": False, "neptune": False, "raytune": False, "tensorboard": False,
              "hub": False}
    update = {k: v for k, v in wanted.items() if k in settings and settings[k] != v}
    if update:
        settings.update(update)
    # Ultralytics patches PIL.Image.open to pip-install pi-heif on the first file PIL cannot
    # identify; offline that turns every non-image into an ImportError. Mark it as done.
    try:
        from ultralytics.utils import patches

        patches._pil_plugins_registered = True
    except (ImportError, AttributeError):  # other ultralytics versions: nothing to disable
        pass
    # On CPU, Ultralytics sets torch to NUM_THREADS (cpu_count - 1) whenever it selects a device
    # (training and the first predict); that global is the one place to choose otherwise.
    if threads is not None:
        try:
            from ultralytics.utils import torch_utils

            torch_utils.NUM_THREADS = threads if threads > 0 else cpu_threads()
        except (ImportError, AttributeError):
            pass


def cpu_threads() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _find_local_ttf() -> Path | None:
    candidates = []
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")
    except Exception:  # matplotlib is an ultralytics dependency, but be tolerant
        pass
    candidates += [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    return next((c for c in candidates if c.exists()), None)


# --------------------------------------------------------------------------- network guard
class NetworkGuardError(RuntimeError):
    pass


_guard_installed = False


def _is_loopback(address) -> bool:
    if not (isinstance(address, (tuple, list)) and address):
        return True  # not an (host, port) pair: an AF_UNIX path or other local address
    host = str(address[0])
    return host in ("localhost", "", "::1") or host.startswith(("127.", "::ffff:127."))


def install_network_guard() -> None:
    """Refuse any socket connection outside loopback in this process (tests and CI).

    An audit hook sees every `socket.connect` and `socket.getaddrinfo`; a non-loopback target
    raises, and the attempt is also recorded in $SPIDERGAN_NETGUARD_LOG when set, so a test can
    fail even when the calling library swallows the exception.
    """
    global _guard_installed
    if _guard_installed:
        return
    _guard_installed = True

    def hook(event, args):
        if event == "socket.connect":
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) == socket.AF_UNIX:
                return
            if not _is_loopback(address):
                _record(f"connect {address!r}")
                raise NetworkGuardError(f"network access outside loopback refused: {address!r}")
        elif event == "socket.getaddrinfo":
            host = args[0]
            if host is None:
                return
            host = host.decode() if isinstance(host, bytes) else str(host)
            if not _is_loopback((host,)):
                _record(f"getaddrinfo {host!r}")
                raise NetworkGuardError(f"name lookup outside loopback refused: {host!r}")

    sys.addaudithook(hook)


def _record(what: str) -> None:
    log = os.environ.get("SPIDERGAN_NETGUARD_LOG")  # read per event: tests set it late
    if not log:
        return
    try:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {what}\n")
    except OSError:
        pass
