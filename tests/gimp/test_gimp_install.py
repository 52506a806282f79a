"""``python3 gimp_plugin/install.py`` (``make install-gimp-plugin``) puts a plug-in GIMP 3 will actually load.

The folder choice is tested for each platform's layout with a fake home (HOME, APPDATA, XDG_CONFIG_HOME
in ``tmp_path``), the platform passed to the installer as a parameter. The copy itself is tested by
running the script as users do; the real GIMP tests (test_gimp_plugin_e2e.py) install with it too and
check that GIMP registered the procedure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "gimp_plugin" / "install.py"
SOURCE = REPO / "gimp_plugin" / "replace-background"
FLATPAK = ".var/app/org.gimp.GIMP/config/GIMP/3.0"


def _load_installer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rb_install", INSTALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


installer = _load_installer()


def _chosen(platform: str, home: Path, **env: str) -> list[Path]:
    return installer.choose_profiles(platform, env, home)[0]


# --- where: each platform's layout -------------------------------------------------------------


def test_linux_native_profile_and_xdg_config_home(tmp_path: Path) -> None:
    assert _chosen("linux", tmp_path) == [tmp_path / ".config/GIMP/3.0"]  # GIMP never started: native
    xdg = tmp_path / "xdg"
    assert _chosen("linux", tmp_path, XDG_CONFIG_HOME=str(xdg)) == [xdg / "GIMP/3.0"]


def test_linux_flatpak_only(tmp_path: Path) -> None:
    """Only the Flatpak GIMP was ever started: its profile alone, no stray native one."""
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    assert _chosen("linux", tmp_path) == [tmp_path / FLATPAK]


def test_linux_native_and_flatpak_both_get_it(tmp_path: Path) -> None:
    (tmp_path / ".config/GIMP/3.0").mkdir(parents=True)
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    profiles, rule = installer.choose_profiles("linux", {}, tmp_path)
    assert profiles == [tmp_path / ".config/GIMP/3.0", tmp_path / FLATPAK]
    assert "every GIMP 3 profile that exists" in rule


def test_windows_appdata(tmp_path: Path) -> None:
    appdata = tmp_path / "AppData" / "Roaming"
    assert _chosen("win32", tmp_path, APPDATA=str(appdata)) == [appdata / "GIMP" / "3.0"]
    assert _chosen("win32", tmp_path) == [appdata / "GIMP" / "3.0"]  # APPDATA unset: its usual place
    # a Flatpak folder means nothing on Windows
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    assert _chosen("win32", tmp_path, APPDATA=str(appdata)) == [appdata / "GIMP" / "3.0"]


def test_macos_application_support(tmp_path: Path) -> None:
    expected = [tmp_path / "Library" / "Application Support" / "GIMP" / "3.0"]
    assert _chosen("darwin", tmp_path) == expected
    assert _chosen("darwin", tmp_path, XDG_CONFIG_HOME=str(tmp_path / "xdg")) == expected


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_gimp3_directory_wins_everywhere(tmp_path: Path, platform: str) -> None:
    (tmp_path / ".config/GIMP/3.0").mkdir(parents=True)
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    profile = tmp_path / "profile"
    assert _chosen(platform, tmp_path, GIMP3_DIRECTORY=str(profile), APPDATA=str(tmp_path)) == [profile]


@pytest.mark.parametrize("platform,profile", [("linux", ".config/GIMP/3.0"), ("win32", "AppData/Roaming/GIMP/3.0"),
                                              ("darwin", "Library/Application Support/GIMP/3.0")])
def test_main_installs_and_uninstalls_for_each_platform(tmp_path: Path, platform: str, profile: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The whole command for each layout, the platform a parameter (not the running one)."""
    env = {"APPDATA": str(tmp_path / "AppData/Roaming")} if platform == "win32" else {}
    assert installer.main([], platform=platform, env=env, home=tmp_path) == 0
    out = capsys.readouterr().out
    dest = tmp_path / profile / "plug-ins" / "replace-background"
    assert f"installed: {dest / 'replace-background.py'}" in out and "rule: " in out and "Restart GIMP" in out
    assert (dest / "replace_background_core.py").is_file() and (dest / "replace_background_contract.py").is_file()
    assert installer.main(["--uninstall"], platform=platform, env=env, home=tmp_path) == 0
    assert not dest.exists()


# --- what: the copy, run as users run it ---------------------------------------------------------


def _install(home: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "GIMP3_DIRECTORY", "APPDATA")}
    return subprocess.run([sys.executable, str(INSTALL), *args], env={**clean, "HOME": str(home), **env},
                          capture_output=True, text=True, check=check)


def _assert_installed(plugins: Path) -> None:
    dest = plugins / "replace-background"
    main = dest / "replace-background.py"
    assert main.read_bytes() == (SOURCE / "replace-background.py").read_bytes()
    modules = sorted(p.name for p in SOURCE.glob("*.py"))
    assert len(modules) >= 7, modules  # the entry file, the standard-library half and the GIMP half
    for name in modules:  # every module of the plug-in, as the repository holds it
        assert (dest / name).read_bytes() == (SOURCE / name).read_bytes(), name
    contract = dest / "replace_background_contract.py"
    assert contract.read_bytes() == (REPO / "handler/contract.py").read_bytes()
    if os.name == "posix":
        assert os.access(main, os.X_OK), "GIMP skips a plug-in file that is not executable"
        for helper in [*(dest / n for n in modules if n != main.name), contract]:
            assert not os.access(helper, os.X_OK), f"{helper.name} would be taken for another plug-in"
    # the project folder, so that the plug-in finds this project's server and key with no option set
    assert (dest / "replace_background_project.txt").read_text() == f"{REPO}\n"
    assert not (dest / "__pycache__").exists()


def test_installs_into_the_native_profile_only_without_flatpak(tmp_path: Path) -> None:
    out = _install(tmp_path).stdout
    _assert_installed(tmp_path / ".config/GIMP/3.0/plug-ins")
    assert not (tmp_path / ".var").exists()
    assert "Filters > Enhance > Replace Background" in out and "lookup_procedure" in out
    assert "rule: no GIMP 3 profile exists yet" in out


def test_installs_into_the_flatpak_profile_too_and_replaces_old_copies(tmp_path: Path) -> None:
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    old = tmp_path / ".config/GIMP/3.0/plug-ins/replace-background"
    (old / "__pycache__").mkdir(parents=True)
    (old / "replace_background_renamed.py").write_text("# a module an older version had\n")
    (old / "replace_background_installed.txt").write_text("replace_background_renamed.py\n")
    out = _install(tmp_path).stdout
    _assert_installed(tmp_path / ".config/GIMP/3.0/plug-ins")
    _assert_installed(tmp_path / FLATPAK / "plug-ins")
    assert out.count("installed: ") == 2 and "rule: every GIMP 3 profile that exists (2 of 2" in out
    assert not (old / "replace_background_renamed.py").exists(), "an older version's module was left behind"


def test_explicit_folders_and_gimp3_directory(tmp_path: Path) -> None:
    _install(tmp_path, "--to", str(tmp_path / "custom"), "--to", str(tmp_path / "second"))
    _assert_installed(tmp_path / "custom")
    _assert_installed(tmp_path / "second")
    _install(tmp_path, GIMP3_DIRECTORY=str(tmp_path / "profile"))
    _assert_installed(tmp_path / "profile/plug-ins")
    assert not (tmp_path / ".config").exists()


def test_uninstall_removes_exactly_what_it_installed(tmp_path: Path) -> None:
    plugins = tmp_path / "plug-ins"
    _install(tmp_path, "--to", str(plugins))
    mine = plugins / "replace-background" / "notes.txt"
    mine.write_text("the user's own file\n")
    out = _install(tmp_path, "--to", str(plugins), "--uninstall").stdout
    assert out.count("removed: ") == len(list(SOURCE.glob("*.py"))) + 3  # + contract, record, list
    assert sorted(p.name for p in mine.parent.iterdir()) == ["notes.txt"], "only the installed files go"
    mine.unlink()
    _install(tmp_path, "--to", str(plugins))
    _install(tmp_path, "--to", str(plugins), "--uninstall")
    assert not (plugins / "replace-background").exists() and plugins.is_dir()
    again = _install(tmp_path, "--to", str(plugins), "--uninstall").stdout
    assert "nothing to remove" in again


def test_uninstall_finds_every_profile(tmp_path: Path) -> None:
    (tmp_path / ".var/app/org.gimp.GIMP").mkdir(parents=True)
    (tmp_path / ".config/GIMP/3.0").mkdir(parents=True)
    _install(tmp_path)
    _install(tmp_path, "--uninstall")
    assert not (tmp_path / ".config/GIMP/3.0/plug-ins/replace-background").exists()
    assert not (tmp_path / FLATPAK / "plug-ins/replace-background").exists()


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "plug-ins"
    target.write_text("not a folder\n")
    proc = _install(tmp_path, "--to", str(target), check=False)
    assert proc.returncode == 1 and "is a file, not a folder" in proc.stderr and "Fix:" in proc.stderr
    assert target.read_text() == "not a folder\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_refused_with_a_fix(tmp_path: Path) -> None:
    target = tmp_path / "plug-ins"
    target.mkdir()
    target.chmod(0o555)
    try:
        proc = _install(tmp_path, "--to", str(target), check=False)
    finally:
        target.chmod(0o755)
    assert proc.returncode == 1 and "Fix:" in proc.stderr and "Traceback" not in proc.stderr
