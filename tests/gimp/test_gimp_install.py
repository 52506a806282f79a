"""``make install-gimp-plugin`` (gimp_plugin/install.sh) puts a plug-in GIMP 3 will actually load."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "gimp_plugin" / "install.sh"


def _install(home: Path, *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "GIMP3_DIRECTORY")}
    proc = subprocess.run(["bash", str(INSTALL), *args], env={**clean, "HOME": str(home), **env},
                          capture_output=True, text=True, check=True)
    return proc.stdout


def _assert_installed(plugins: Path) -> None:
    main = plugins / "replace-background" / "replace-background.py"
    core = plugins / "replace-background" / "replace_background_core.py"
    assert main.read_bytes() == (REPO / "gimp_plugin/replace-background/replace-background.py").read_bytes()
    contract = plugins / "replace-background" / "replace_background_contract.py"
    assert core.is_file() and contract.read_bytes() == (REPO / "handler/contract.py").read_bytes()
    assert os.access(main, os.X_OK), "GIMP skips a plug-in file that is not executable"
    assert not os.access(core, os.X_OK) and not os.access(contract, os.X_OK)
    # the project folder, so that the plug-in finds this project's server and key with no option set
    assert (plugins / "replace-background" / "replace_background_project.txt").read_text() == f"{REPO}\n"
    assert not (plugins / "replace-background" / "__pycache__").exists()


@pytest.mark.skipif(os.name != "posix", reason="install.sh is a POSIX shell script")
def test_installs_into_the_native_profile_only_without_flatpak(tmp_path: Path) -> None:
    out = _install(tmp_path)
    _assert_installed(tmp_path / ".config/GIMP/3.0/plug-ins")
    assert not (tmp_path / ".var").exists()
    assert "Filters > Enhance > Replace Background" in out and "lookup_procedure" in out


@pytest.mark.skipif(os.name != "posix", reason="install.sh is a POSIX shell script")
def test_installs_into_the_flatpak_profile_too_and_replaces_old_copies(tmp_path: Path) -> None:
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    stale = tmp_path / ".config/GIMP/3.0/plug-ins/replace-background/__pycache__"
    stale.mkdir(parents=True)
    out = _install(tmp_path)
    _assert_installed(tmp_path / ".config/GIMP/3.0/plug-ins")
    _assert_installed(tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins")
    assert out.count("installed: ") == 2


@pytest.mark.skipif(os.name != "posix", reason="install.sh is a POSIX shell script")
def test_explicit_folders_and_gimp3_directory(tmp_path: Path) -> None:
    _install(tmp_path, str(tmp_path / "custom"))
    _assert_installed(tmp_path / "custom")
    _install(tmp_path, GIMP3_DIRECTORY=str(tmp_path / "profile"))
    _assert_installed(tmp_path / "profile/plug-ins")
    assert not (tmp_path / ".config").exists()
