import socket
import subprocess
import sys

import pytest

from spidergan import env

from conftest import ROOT, venv_env


def test_state_dir_inside_project(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.delenv("SPIDERGAN_ROOT", raising=False)
    assert env.project_root(sub) == tmp_path
    assert env.state_dir(tmp_path) == tmp_path / ".spidergan"


def test_setup_points_tool_homes_into_state_dir():
    import os

    state = env.setup(ROOT)
    for var in ("YOLO_CONFIG_DIR", "U2NET_HOME", "TORCH_HOME"):
        assert os.environ[var].startswith(str(state)), var
    assert os.environ["DVC_NO_ANALYTICS"] == "1"
    assert os.environ["YOLO_OFFLINE"] == "1"


def test_guard_refuses_non_loopback_and_records(netguard_log):
    env.install_network_guard()  # conftest already did through SPIDERGAN_NETGUARD; idempotent
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.close()  # a closed socket: if the guard failed, connect dies locally with EBADF, no packet
    with pytest.raises(env.NetworkGuardError):
        s.connect(("192.0.2.1", 9))
    with pytest.raises(env.NetworkGuardError):
        socket.getaddrinfo("example.invalid", 80)
    assert "192.0.2.1" in netguard_log.read_text()


def test_guard_allows_loopback():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=5)
    c.close()
    srv.close()


def test_guard_in_subprocess_stage(tmp_path, netguard_log):
    """A child process with SPIDERGAN_NETGUARD=1 (as every stage under test) is guarded too."""
    code = ("from spidergan import env; env.setup(); import socket; s = socket.socket(); s.close()\n"
            "try:\n    s.connect(('192.0.2.1', 9))\nexcept env.NetworkGuardError:\n    print('refused')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env=venv_env({"SPIDERGAN_ROOT": str(tmp_path)}), timeout=60)
    assert out.stdout.strip() == "refused", out.stderr
    assert "192.0.2.1" in netguard_log.read_text()


def test_configure_ultralytics_offline(netguard_log):
    env.configure_ultralytics()
    from ultralytics import settings

    for key in ("sync", "dvc", "clearml", "comet", "mlflow"):
        assert settings[key] is False, key
    import os
    from pathlib import Path

    from ultralytics.utils import USER_CONFIG_DIR

    # where check_font looks: without it there, every dataset check calls GitHub
    assert (Path(USER_CONFIG_DIR) / "Arial.ttf").stat().st_size > 10_000
    assert str(USER_CONFIG_DIR).startswith(os.environ["YOLO_CONFIG_DIR"])
    assert not netguard_log.exists() or netguard_log.read_text() == ""


def test_ultralytics_pil_patch_does_not_break_rejection():
    """Ultralytics patches Image.open to pip-install a HEIF plugin on unknown files."""
    from spidergan.images import ImageRejected, load_rgb

    env.configure_ultralytics()
    with pytest.raises(ImageRejected) as e:
        load_rgb(b"<html>not an image</html>")
    assert e.value.reason == "not_an_image"
