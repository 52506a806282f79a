#!/usr/bin/env python3
"""Install the "Replace Background..." GIMP 3 plug-in: ``python3 gimp_plugin/install.py`` on any desktop.

Standard library only (Python 3.8 or newer), so it runs the same on Linux, Windows and macOS, with no
bash, make or virtual environment::

    python3 gimp_plugin/install.py                # the GIMP 3 profile(s) found, by the rule below
    python3 gimp_plugin/install.py --to DIR       # this plug-ins folder instead (may be given again)
    python3 gimp_plugin/install.py --uninstall    # remove what it installed there, and nothing else

Where GIMP 3 keeps its plug-ins (``<profile>/plug-ins``):

- ``GIMP3_DIRECTORY``, when set, is the profile GIMP starts with: that one alone;
- Linux: ``$XDG_CONFIG_HOME/GIMP/3.0`` (``~/.config/GIMP/3.0``), and for the Flatpak GIMP
  ``~/.var/app/org.gimp.GIMP/config/GIMP/3.0``;
- Windows: ``%APPDATA%\\GIMP\\3.0``;
- macOS: ``~/Library/Application Support/GIMP/3.0``.

Rule when several exist (a native and a Flatpak GIMP): the plug-in goes into **every** profile that
exists (the Flatpak one exists once ``~/.var/app/org.gimp.GIMP`` does), so that whichever GIMP the user
starts has it; when none exists yet (GIMP never started), into the platform's native profile, which
GIMP will use. The script prints the rule it applied and each folder.

GIMP 3 runs a Python plug-in only from a folder named like the plug-in's file, with that file
executable; anything else is skipped silently. The installer gets both right, copies every module of
``gimp_plugin/replace-background/``, copies the project's HTTP contract ``handler/contract.py`` in as
``replace_background_contract.py`` (the repository keeps one copy), and records this project's folder
(``replace_background_project.txt``), from which the plug-in, with every option at its default, finds
this project's server and key file. It lists what it installed in ``replace_background_installed.txt``:
``--uninstall`` removes exactly those files, and the folder when nothing else is left in it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

NAME = "replace-background"
PROC_NAME = "python-fu-replace-background"
HERE = Path(__file__).resolve().parent
SOURCE = HERE / NAME
PROJECT = HERE.parent
CONTRACT = PROJECT / "handler" / "contract.py"
CONTRACT_AS = "replace_background_contract.py"
RECORD = "replace_background_project.txt"  # read by the plug-in (replace_background_settings.PROJECT_RECORD)
MANIFEST = "replace_background_installed.txt"
FLATPAK_APP = Path(".var/app/org.gimp.GIMP")


class InstallError(Exception):
    """A failure the user can act on; the text says what and what to do."""


def native_profile(platform: str, env: Mapping[str, str], home: Path) -> Path:
    """The profile folder GIMP 3 itself uses on ``platform`` (``sys.platform``'s spelling)."""
    if platform.startswith("win"):
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "GIMP" / "3.0"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / "3.0"
    config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config) / "GIMP" / "3.0"


def candidate_profiles(platform: str, env: Mapping[str, str], home: Path) -> list[tuple[Path, bool]]:
    """Every profile a GIMP 3 on ``platform`` may use, native first, each with whether it exists."""
    native = native_profile(platform, env, home)
    found = [(native, native.is_dir())]
    if platform.startswith("linux"):
        flatpak = home / FLATPAK_APP / "config" / "GIMP" / "3.0"
        found.append((flatpak, (home / FLATPAK_APP).is_dir()))
    return found


def choose_profiles(platform: str, env: Mapping[str, str], home: Path) -> tuple[list[Path], str]:
    """The profiles to install into and the rule that chose them, in words for the user."""
    if env.get("GIMP3_DIRECTORY"):
        return [Path(env["GIMP3_DIRECTORY"])], "GIMP3_DIRECTORY is set: the profile GIMP starts with"
    candidates = candidate_profiles(platform, env, home)
    existing = [path for path, exists in candidates if exists]
    if existing:
        return existing, f"every GIMP 3 profile that exists ({len(existing)} of {len(candidates)} known places)"
    native = candidates[0][0]
    return [native], "no GIMP 3 profile exists yet (GIMP never started): the native one, which GIMP will use"


def plugin_files(source: Path = SOURCE) -> list[Path]:
    """The plug-in's own files: every module in its folder (the entry file named like the folder)."""
    entry = source / f"{NAME}.py"
    if not entry.is_file():
        raise InstallError(f"{entry} is missing. Fix: run the installer from a complete copy of the project.")
    if not CONTRACT.is_file():
        raise InstallError(f"{CONTRACT} is missing (the plug-in speaks the project's HTTP contract). "
                           "Fix: run the installer from a complete copy of the project.")
    return sorted(p for p in source.glob("*.py") if p.is_file())


def _installed_names(dest: Path) -> list[str]:
    """What an earlier run installed into ``dest``: its manifest, else the files this version installs."""
    try:
        names = (dest / MANIFEST).read_text(encoding="utf-8").split()
    except OSError:
        names = [p.name for p in plugin_files()] + [CONTRACT_AS, RECORD]
    return [n for n in names if n and "/" not in n and "\\" not in n and n not in (".", "..")]


def install(plugins: Path, files: Sequence[Path]) -> Path:
    """Copy the plug-in into ``plugins``/replace-background; return the installed entry file."""
    if plugins.exists() and not plugins.is_dir():
        raise InstallError(f"{plugins} is a file, not a folder. Fix: give the plug-ins folder itself.")
    dest = plugins / NAME
    names = [f.name for f in files] + [CONTRACT_AS, RECORD]
    if (dest / MANIFEST).is_file():  # an older version's modules that this one no longer has
        for old in set(_installed_names(dest)) - set(names):
            if (dest / old).is_file():
                (dest / old).unlink()
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    shutil.copyfile(CONTRACT, dest / CONTRACT_AS)
    (dest / RECORD).write_text(f"{PROJECT}\n", encoding="utf-8")
    (dest / MANIFEST).write_text("".join(f"{n}\n" for n in [*names, MANIFEST]), encoding="utf-8")
    shutil.rmtree(dest / "__pycache__", ignore_errors=True)  # stale bytecode of an older version
    if os.name == "posix":  # Windows has no executable bit; GIMP there runs .py files through its Python
        dest.chmod(0o755)
        for n in names:
            (dest / n).chmod(0o755 if n == f"{NAME}.py" else 0o644)
        (dest / MANIFEST).chmod(0o644)
    return dest / f"{NAME}.py"


def uninstall(plugins: Path) -> list[str]:
    """Remove what ``install`` put into ``plugins``; return the files removed ([] when none was there)."""
    dest = plugins / NAME
    if not (dest / MANIFEST).is_file() and not (dest / f"{NAME}.py").is_file():
        return []
    removed = []
    for n in dict.fromkeys([*_installed_names(dest), MANIFEST]):
        path = dest / n
        if path.is_file():
            path.unlink()
            removed.append(str(path))
    try:
        dest.rmdir()  # only when empty: files the user put there stay
    except OSError:
        pass
    return removed


NEXT_STEPS = """
Restart GIMP 3, open a photo and look for  Filters > Enhance > Replace Background...
(or press / and type "Replace Background").

Check that GIMP registered it (a broken plug-in is skipped silently):
  - Help > Plug-in Browser, search "replace-background": {proc} must be listed; or
  - gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval --quit -b \\
      'from gi.repository import Gimp; print("registered:", Gimp.get_pdb().lookup_procedure("{proc}") is not None)'
    (Flatpak: flatpak run --command=gimp-console-3.0 org.gimp.GIMP -i -d -f ... with the same arguments)

With every option at its default the plug-in uses this project's server, {project}:
start it with  cd {project} && make serve  (the plug-in finds its address and key file, and renews
expired keys by itself). For another server, set Server URL and Key file. See docs/GIMP.md.
"""


def _targets(args: argparse.Namespace, platform: str, env: Mapping[str, str], home: Path) -> list[Path]:
    """The plug-ins folders this run works on, after printing why."""
    if args.to:
        print("into the folder(s) given with --to")
        return [Path(d).expanduser() for d in args.to]
    if args.uninstall and not env.get("GIMP3_DIRECTORY"):  # wherever an earlier run may have installed
        return [path / "plug-ins" for path, _ in candidate_profiles(platform, env, home)]
    profiles, rule = choose_profiles(platform, env, home)
    print(f"rule: {rule}")
    return [p / "plug-ins" for p in profiles]


def main(argv: Sequence[str] | None = None, platform: str = sys.platform,
         env: Mapping[str, str] | None = None, home: Path | None = None) -> int:
    """The command line; ``platform``, ``env`` and ``home`` are parameters so that tests can fake them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", action="append", metavar="DIR",
                        help="a GIMP 3 plug-ins folder to use instead of the profile(s) found (repeatable)")
    parser.add_argument("--uninstall", action="store_true", help="remove the plug-in this script installed")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    try:
        targets = _targets(args, platform, env, home)
        if args.uninstall:
            removed = [f for plugins in targets for f in uninstall(plugins)]
            for path in removed:
                print(f"removed: {path}")
            print("nothing to remove: the plug-in is not installed there" if not removed
                  else "Restart GIMP 3: the Replace Background menu entry is gone.")
            return 0
        files = plugin_files()
        for plugins in targets:
            print(f"installed: {install(plugins, files)}")
    except (InstallError, OSError) as exc:
        print(f"install.py: {exc}", file=sys.stderr)
        if isinstance(exc, OSError):
            print("Fix: check that the folder is yours and writable, or name another with --to DIR.",
                  file=sys.stderr)
        return 1
    print(NEXT_STEPS.format(proc=PROC_NAME, project=PROJECT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
