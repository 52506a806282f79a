"""The GIMP plug-in folder as ``gimp_plugin/install.py`` assembles it, for tests that import the plug-in.

The repository holds one copy of the HTTP contract, ``handler/contract.py``; install.py copies it into
the installed plug-in folder as ``replace_background_contract.py``. Tests that import the plug-in's
standard-library half (``replace_background_core``) therefore import it from a folder that install.py
filled, once per test session: they exercise exactly the files a user's GIMP loads.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "gimp_plugin" / "install.py"
NAME = "replace-background"
SOURCE_DIR = REPO / "gimp_plugin" / NAME  # the plug-in's own files, as the repository holds them


def install_into(plugins: Path, installer: Path = INSTALLER) -> Path:
    """Run ``installer`` for the plug-ins folder ``plugins``; return the installed plug-in folder."""
    subprocess.run([sys.executable, str(installer), "--to", str(plugins)], check=True, capture_output=True, text=True)
    return plugins / NAME


@functools.cache
def installed_folder() -> Path:
    """A plug-in folder install.py filled in a temporary place, made once per session, removed at exit."""
    plugins = Path(tempfile.mkdtemp(prefix="rb-plugins-"))
    atexit.register(shutil.rmtree, plugins, ignore_errors=True)
    return install_into(plugins)


def import_core() -> ModuleType:
    """``replace_background_core`` from the installed folder, as GIMP imports it (one module object).

    The folder's name has a dash and the module's does not, so it is imported by path, like GIMP
    does when it runs ``replace-background.py`` with its own folder first on ``sys.path``.
    """
    folder = str(installed_folder())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import replace_background_core

    return replace_background_core
