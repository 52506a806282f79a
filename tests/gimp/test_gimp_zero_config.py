"""A plug-in installed by `make install-gimp-plugin` works with every option at its default, all day.

The ``project_server`` of tests/conftest.py is a copy of this project (``gimp_plugin/`` and the
``serve/`` folder) whose real TorchServe was started by ``handler.serve start`` (what `make serve`
runs), on free ports, with keys that live 1 minute. The plug-in is installed with that copy's
install.py, which records the project folder; GIMP sees the project's ``serve/`` read-only at the
same path. With no argument set, the plug-in must find the server (``serve/server.json``) and its key
(``serve/key_file.json``); after the key expired it must renew it (the key file's API key, TorchServe's
``POST /token``) and succeed, with nothing for the user to do. A typed key is not renewed, and the
message says how to get a new one; a server that does not answer is met with the exact command that
starts it, with the project's folder.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from gimp_checks import PHOTO, photo_and_matte, successful
from gimp_harness import assert_failed_cleanly, in_job, run_gimp, skip_unless_gimp

from tests.conftest import wait_for_key_expiry
from tests.ports import free_port

pytestmark = [pytest.mark.gimp, pytest.mark.serve, pytest.mark.slow]
RENEWED = "the inference key was refused (expired or rotated); renewed it"


def test_defaults_work_and_an_expired_key_is_renewed(project_server, tmp_path: Path) -> None:
    skip_unless_gimp(what="zero-configuration GIMP test")
    project = project_server.workdir.parent
    installer = project / "gimp_plugin" / "install.py"
    binds = (project_server.workdir,)

    # 1. freshly installed, every option at its default, the key still fresh
    job = tmp_path / "fresh"
    photo = in_job(job, PHOTO)
    cases = [{"name": "defaults", "input": photo},
             {"name": "nothing_there", "input": photo, "setup": {"old_mask": True},
              "args": {"server-url": f"http://127.0.0.1:{free_port()}"}}]
    fresh = run_gimp(job, cases, installer=installer, binds=binds)
    record = job / "profile/plug-ins/replace-background/replace_background_project.txt"
    assert record.read_text().strip() == str(project)
    photo_and_matte(fresh, successful(fresh, "defaults"), project_server)
    start = f"cd {shlex.quote(str(project))} && make serve"
    assert_failed_cleanly(fresh.case("nothing_there"), ["connection refused", start])

    # 2. the key has expired: defaults still work (renewed), a typed old key says how to renew
    expired = wait_for_key_expiry(project_server)
    job = tmp_path / "expired"
    photo = in_job(job, PHOTO)
    cases = [{"name": "typed_expired", "input": photo, "args": {"inference-key": expired}},
             {"name": "defaults_after_expiry", "input": photo}]
    later = run_gimp(job, cases, installer=installer, binds=binds)
    assert_failed_cleanly(later.case("typed_expired"),
                          ["rejected the inference key typed in Inference key", "clear Inference key",
                           f"cd {shlex.quote(str(project))} && .venv/bin/python -m handler.serve key"])
    photo_and_matte(later, successful(later, "defaults_after_expiry"), project_server)
    assert RENEWED in later.log and later.log.count(RENEWED) == 1, later.log[-3000:]
    assert project_server.inference_key != expired
