"""The GIMP plug-in, installed from the clone with every option at its default, against the container.

The container of ``conftest.server`` writes its key and address into the clone's ``serve/`` folder;
the clone's ``install.py`` records the clone as the plug-in's project, so a real GIMP 3 must find the
containerised server and its key by itself and put the server's soft matte into the layer mask.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.container.conftest import MODEL, Server

GIMP_TESTS = Path(__file__).resolve().parents[1] / "gimp"
if str(GIMP_TESTS) not in sys.path:
    sys.path.insert(0, str(GIMP_TESTS))

from gimp_harness import in_job, run_gimp, skip_unless_gimp  # noqa: E402

try:  # the GIMP tests' shared checks
    from gimp_checks import PHOTO, photo_and_matte, successful
except ImportError:  # before they had a module of their own
    from test_gimp_plugin_e2e import PHOTO, photo_and_matte, successful

pytestmark = [pytest.mark.gimp]


def test_the_plugin_with_defaults_uses_the_container(server: Server, clone: Path, tmp_path: Path) -> None:
    skip_unless_gimp(what="GIMP plug-in against the container")
    job = tmp_path / "job"
    photo = in_job(job, PHOTO)
    run = run_gimp(job, [{"name": "defaults", "input": photo}], installer=clone / "gimp_plugin" / "install.py",
                   binds=(server.key_folder,))
    case = successful(run, "defaults")
    asked = SimpleNamespace(inference_url=server.url, model_name=MODEL, inference_key=server.key())
    _, mask, _ = photo_and_matte(run, case, asked)  # GIMP's mask is exactly the container's soft matte
    assert mask.min() < 64 and mask.max() > 192  # a person and a background, not a blank mask
