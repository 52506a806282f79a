"""The very manifests of deploy/kubernetes/, run by ``podman kube play`` with their 2 replicas.

Podman plays the Deployment (pods, env from the Secret, emptyDir, non-root, the liveness probe as a
health check); it has no Service, and podman 4.3 runs no readiness or startup probes itself. So
each pod is checked from inside its own network namespace, on its loopback: the manifest's probe
commands are run there as the kubelet would run them, and requests are sent from there.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.container import podman as pm
from tests.container.conftest import FIGURES

DEPLOYMENT = Path("deploy") / "kubernetes" / "deployment.yaml"
SECRET = "replace-background-key"

# Runs inside a pod (the image's Python, standard library only). argv: mode [count]; stdin: the photo;
# the right key comes in the environment (K). "auth" prints the status for no key, a wrong key and the
# key; "loop" sends COUNT composites one after another and prints a line before and after each.
POD_CLIENT = r"""
import json, os, sys, urllib.error, urllib.request
photo = sys.stdin.buffer.read()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def send(key):
    headers = {"Content-Type": "image/jpeg", "X-Mode": "composite", "X-Background": "#00b140"}
    if key is not None:
        headers["Authorization"] = "Bearer " + key
    request = urllib.request.Request("http://127.0.0.1:8080/predictions/person_segmenter", data=photo,
                                     headers=headers, method="POST")
    try:
        with opener.open(request, timeout=120) as answer:
            return answer.status, answer.read()[:8]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]
key = os.environ["K"]
if sys.argv[1] == "auth":
    result = {}
    for name, k in (("none", None), ("wrong", key + "x"), ("key", key)):
        status, body = send(k)
        result[name] = [status, body.decode("latin-1")]
    print(json.dumps(result))
else:
    for i in range(int(sys.argv[2])):
        print("start", i, flush=True)
        status, _ = send(key)
        print("done", i, status, flush=True)
"""


def probe_command(manifest: dict, probe: str) -> list[str]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return container[probe]["exec"]["command"]


def remove_pods(deployment: str) -> None:
    """``kube down`` and then any pod of the Deployment still there (kube down stops at a pod already gone)."""
    pm.podman("kube", "down", "-", input=f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {deployment}}}\n"
              .encode(), check=False, timeout=300)
    pods = pm.podman("pod", "ps", "--filter", f"name={deployment}-pod", "--format", "{{.Name}}").stdout.decode().split()
    if pods:
        pm.podman("pod", "rm", "-f", "--time", "5", *pods, check=False, timeout=300)


def server_containers(deployment: str) -> list[str]:
    """The app container of each pod the Deployment made (podman names pods DEPLOYMENT-pod-N)."""
    pods = pm.podman("pod", "ps", "--filter", f"name={deployment}-pod", "--format", "{{.Name}}").stdout.decode().split()
    names = []
    for pod in sorted(pods):
        found = pm.podman("ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}} {{.IsInfra}}").stdout.decode()
        names += [line.split()[0] for line in found.splitlines() if line.split()[1:] == ["false"]]
    return names


@pytest.fixture(scope="module")
def cluster(image: str, clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    manifest_path = clone / DEPLOYMENT
    manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == image
    key = secrets.token_urlsafe(32)
    secret_file = tmp_path_factory.mktemp("secret") / "secret.json"
    # podman's form of a Kubernetes Secret's data: each key's value base64-encoded
    secret_file.write_text(json.dumps({"key": base64.b64encode(key.encode()).decode()}), encoding="utf-8")
    remove_pods(manifest["metadata"]["name"])
    pm.podman("secret", "rm", SECRET, check=False)
    pm.podman("secret", "create", SECRET, str(secret_file))
    start = time.monotonic()
    pm.podman("kube", "play", str(manifest_path), timeout=600)
    containers = server_containers(manifest["metadata"]["name"])
    try:
        yield {"manifest": manifest, "key": key, "containers": containers, "start": start, "path": manifest_path}
    finally:
        remove_pods(manifest["metadata"]["name"])
        pm.podman("secret", "rm", SECRET, check=False)


def in_pod(container: str, key: str, photo: bytes, *args: str, timeout: float = 300) -> str:
    proc = pm.podman("exec", "-i", "-e", f"K={key}", container, "python3", "-c", POD_CLIENT, *args,
                     input=photo, timeout=timeout)
    return proc.stdout.decode()


def test_the_deployment_makes_two_non_root_pods(cluster: dict) -> None:
    assert cluster["manifest"]["spec"]["replicas"] == 2
    assert len(cluster["containers"]) == 2, cluster["containers"]
    for container in cluster["containers"]:
        user = pm.podman("inspect", container, "--format", "{{.Config.User}}").stdout.decode().strip()
        assert user.split(":")[0] not in ("", "0", "root"), user


def test_both_pods_become_ready_through_their_probes(cluster: dict) -> None:
    startup = probe_command(cluster["manifest"], "startupProbe")
    readiness = probe_command(cluster["manifest"], "readinessProbe")
    deadline = time.monotonic() + 400
    for container in cluster["containers"]:
        while pm.podman("exec", container, *startup, check=False).returncode != 0:
            assert time.monotonic() < deadline, pm.podman("logs", "--tail", "40", container, check=False).stdout
            time.sleep(2)
        assert pm.podman("exec", container, *readiness, check=False).returncode == 0
        # the liveness probe, which podman turned into the container's health check
        assert pm.podman("healthcheck", "run", container, check=False).returncode == 0
    FIGURES["kube play to both pods ready (s)"] = round(time.monotonic() - cluster["start"], 1)


def test_every_pod_refuses_no_key_and_a_wrong_key_and_serves_the_key(cluster: dict, photo: bytes) -> None:
    test_both_pods_become_ready_through_their_probes(cluster)
    for container in cluster["containers"]:
        result = json.loads(in_pod(container, cluster["key"], photo, "auth"))
        assert result["none"][0] == 401 and "InvalidKeyException" in result["none"][1], (container, result)
        assert result["wrong"][0] == 401, (container, result)
        assert result["key"][0] == 200 and result["key"][1].startswith("\x89PNG"), (container, result)


def test_killing_one_pod_under_load_leaves_the_other_answering(cluster: dict, photo: bytes) -> None:
    test_both_pods_become_ready_through_their_probes(cluster)
    victim, survivor = cluster["containers"]
    count = 12
    loops = {name: subprocess.Popen(["podman", "exec", "-i", "-e", f"K={cluster['key']}", name, "python3", "-c",
                                     POD_CLIENT, "loop", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=pm.env())
             for name in (victim, survivor)}
    for proc in loops.values():
        assert proc.stdin is not None
        proc.stdin.write(photo)
        proc.stdin.close()
    # Let the victim answer a few, then kill its pod (as a node failure would) while both loops run.
    victim_lines = []
    assert loops[victim].stdout is not None
    while sum(line.startswith("done") for line in victim_lines) < 3:
        line = loops[victim].stdout.readline().decode()
        assert line, "the victim's client stopped before the kill"
        victim_lines.append(line)
    pod = pm.podman("inspect", victim, "--format", "{{.Pod}}").stdout.decode().strip()
    pm.podman("pod", "rm", "-f", "--time", "0", pod, timeout=120)
    victim_lines += loops[victim].stdout.read().decode().splitlines()
    assert loops[survivor].stdout is not None
    survivor_lines = loops[survivor].stdout.read().decode().splitlines()  # ends when its loop ends
    loops[survivor].wait(timeout=60)
    loops[victim].wait(timeout=60)
    survivor_done = [line.split() for line in survivor_lines if line.startswith("done")]
    assert len(survivor_done) == count and all(status == "200" for *_, status in survivor_done), survivor_lines
    started = sum(line.startswith("start") for line in victim_lines)
    answered = sum(line.startswith("done") and line.split()[-1] == "200" for line in victim_lines)
    FIGURES["pod kill: survivor answered"] = f"{len(survivor_done)} of {count}"
    FIGURES["pod kill: lost on the killed pod"] = f"{started - answered} of {started} sent ({answered} answered)"
    assert started - answered <= 1  # only the request in flight at the kill
