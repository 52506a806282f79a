"""Host side of the GIMP tests: find the GIMP 3 root, run a batch of cases in a real GIMP, read results.

A whole batch of cases runs in ONE gimp-console start (about 2 s), against a fresh copy of the
warmed profile that holds only our plug-in, so a test sees exactly the plug-in in this checkout.
The GIMP side is ``gimp_driver.py``; both talk through a job folder bind-mounted at /rbjob.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.plugin_folder import INSTALLER, install_into

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHROOT_RUN = HERE / "gimp-chroot-run.sh"
DRIVER = HERE / "gimp_driver.py"
UI_RUN = HERE / "gimp_ui_run.sh"
SCREENSHOT = HERE / "gimp_screenshot.py"
DEFAULT_ROOT = "/var/cache/replace-background/gimp3-root"
JOB_MOUNT = "/rbjob"  # where the job folder appears inside the root
PROC_NAME = "python-fu-replace-background"


def gimp_root() -> Path:
    """The cached GIMP 3 root (``GIMP_ROOT`` overrides, as in the Makefile)."""
    return Path(os.environ.get("GIMP_ROOT", DEFAULT_ROOT))


def unavailable_reason(root: Path | None = None) -> str | None:
    """Why a real GIMP cannot run here, or None when it can."""
    root = root or gimp_root()
    if os.name != "posix" or os.geteuid() != 0:
        return "GIMP 3 tests need root (they chroot into the GIMP 3 root and bind-mount with unshare)"
    if not (root / "usr/bin/gimp-console-3.0").exists():
        return f"no GIMP 3 root at {root}: build it with `make gimp-root` (as root, needs network once)"
    if not (root / ".gimp-root-ok").exists():
        return f"GIMP 3 root at {root} never passed its smoke test: re-run `make gimp-root`"
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed on this host"
    return None


def ui_unavailable_reason(root: Path | None = None) -> str | None:
    """Why the dialog test cannot run (no virtual X server in the root), or None."""
    root = root or gimp_root()
    reason = unavailable_reason(root)
    if reason:
        return reason
    for tool in ("usr/bin/Xvfb", "usr/bin/xdotool"):
        if not (root / tool).exists():
            return f"the GIMP root {root} has no {tool}: re-run `make gimp-root` to add xvfb and xdotool"
    return None


def skip_unless_gimp(ui: bool = False, what: str = "GIMP tests") -> None:
    """Skip where GIMP cannot run (``ui``: nor its dialogs), printing why: these tests never pass silently."""
    reason = ui_unavailable_reason() if ui else unavailable_reason()
    if reason:
        print(f"SKIP {what}: {reason}")
        pytest.skip(reason)


@dataclass
class GimpRun:
    """The outcome of one gimp-console batch: its exit status, log and the driver's results."""

    returncode: int
    log: str
    results: dict
    job_dir: Path
    uploads: dict[str, bytes] = field(default_factory=dict)  # case name -> PNG a fake server received

    def case(self, name: str) -> dict:
        for case in self.results.get("cases", []):
            if case["name"] == name:
                if not case.get("ok"):
                    raise AssertionError(f"GIMP driver crashed in case {name}:\n{case.get('traceback')}")
                return case
        raise AssertionError(f"case {name} did not run; GIMP log tail:\n{self.log[-4000:]}")

    def path(self, name: str) -> Path:
        """Host path of a file the driver wrote (``name`` relative to the job folder)."""
        return self.job_dir / name


def in_job(job_dir: Path, host_file: Path, name: str | None = None) -> str:
    """Copy a host file into the job folder; return its path as GIMP sees it."""
    target = job_dir / "files" / (name or host_file.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(host_file, target)
    return f"{JOB_MOUNT}/files/{target.name}"


def _install_plugin(profile: Path, installer: Path = INSTALLER) -> None:
    """Install with the project's own installer, so the tests also prove that install.py works."""
    install_into(profile / "plug-ins", installer)


def _new_mount_points(root: Path, paths: list[Path]) -> list[Path]:
    """The folders a bind mount at ``paths`` will create inside ``root`` (deepest first), to remove after."""
    created: list[Path] = []
    for path in paths:
        inside = root / Path(path).resolve().relative_to("/")
        for folder in (inside, *inside.parents):
            if folder == root or folder.exists():
                break
            created.append(folder)
    return sorted(set(created), key=lambda f: len(f.parts), reverse=True)


def run_gimp(
    job_dir: Path,
    cases: list[dict],
    env: dict[str, str] | None = None,
    timeout: float = 900,
    root: Path | None = None,
    ui: bool = False,
    installer: Path = INSTALLER,
    binds: tuple[Path, ...] = (),
) -> GimpRun:
    """Run ``cases`` (see gimp_driver.py) in one headless GIMP; paths in cases are GIMP-side (/rbjob/...).

    ``ui=True`` runs GIMP under a virtual display that accepts the plug-in's dialogs (gimp_ui_run.sh).
    ``installer``: the install.py to install with (another project's copy records that project).
    ``binds``: host folders GIMP sees at the same path (read-only), e.g. a project's ``serve/``.
    """
    root = root or gimp_root()
    job_dir.mkdir(parents=True, exist_ok=True)
    profile = job_dir / "profile"
    warm = root / "root/.config/GIMP/3.0"
    if not profile.exists():
        if warm.is_dir():
            shutil.copytree(warm, profile, symlinks=True)
        else:
            profile.mkdir()
    _install_plugin(profile, installer)
    for helper in (DRIVER, UI_RUN, SCREENSHOT):
        shutil.copyfile(helper, job_dir / helper.name)
    (job_dir / "job.json").write_text(json.dumps({"cases": cases}, indent=1))
    results_file = job_dir / "results.json"
    results_file.unlink(missing_ok=True)
    cmd = ["bash", str(CHROOT_RUN), str(root), "-b", f"{job_dir}:{JOB_MOUNT}",
           "-e", f"GIMP3_DIRECTORY={JOB_MOUNT}/profile", "-e", f"RB_JOB={JOB_MOUNT}/job.json"]
    mount_points = _new_mount_points(root, list(binds))
    for folder in binds:
        cmd += ["-b", f"{Path(folder).resolve()}:{Path(folder).resolve()}:ro"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    cmd += ["--", *(["bash", f"{JOB_MOUNT}/{UI_RUN.name}"] if ui else [])]
    cmd += ["gimp-console-3.0", "-i", "-d", "-f", "--batch-interpreter=python-fu-eval",
            "-b", f'exec(open("{JOB_MOUNT}/gimp_driver.py").read())', "--quit"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace")
        rc, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        rc, log = -1, (out.decode(errors="replace") if isinstance(out, bytes) else out) + "\n[harness] TIMEOUT"
    for folder in mount_points:  # the private mounts are gone; their empty mount points are ours to remove
        try:
            folder.rmdir()
        except OSError:
            pass
    (job_dir / "gimp.log").write_text(log)
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return GimpRun(rc, log, results, job_dir)


# --- checks on the driver's results, shared by the test modules ---------------------------------


def assert_unchanged(case: dict) -> None:
    """Same layers (ids, names, offsets, pixels, masks, visibility), selection and selected layers."""
    assert case["before"] == case["after"], json.dumps({"before": case["before"], "after": case["after"]})[:3000]


def assert_failed_cleanly(case: dict, needles: list[str], hint: bool = True, undo_clean: bool = True) -> None:
    """The run failed with an error naming every needle, and the image is exactly as it was.

    ``hint``: the error must also say what to do ("Fix: ..."). ``undo_clean``: nothing is on the
    undo stack either, as for every failure before the edit; a failure half-way through the edit
    is rolled back by hand inside its undo group, which leaves an (empty) undo step: False there.
    """
    assert case["status"] == "execution-error", f"expected a clean failure, got {case['status']!r}"
    for needle in needles:
        assert needle in case["error"], case["error"]
    if hint:
        assert "Fix:" in case["error"], case["error"]
    assert_unchanged(case)
    if undo_clean:
        assert not case["undo_dirty"], "a failure before the edit must not leave an undo step"
