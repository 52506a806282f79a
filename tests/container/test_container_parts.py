"""The container's parts that need no container: the shared key check, the entry point's settings
and the health check's reading of the management API."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from handler import shared_key

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "deploy" / "container" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


entrypoint = load("entrypoint")
healthcheck = load("healthcheck")


def test_the_shared_key_is_read_from_the_named_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("  s3cret\n")
    assert shared_key.load_key({shared_key.KEY_FILE_ENV: str(tmp_path / "key")}) == "s3cret"
    assert shared_key.load_key({}) is None  # `make serve`: TorchServe's own keys


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_key_file_stops_the_worker(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "key").write_text(content)
    with pytest.raises(shared_key.SharedKeyError, match="REPLACE_BACKGROUND_KEY_FILE"):
        shared_key.load_key({shared_key.KEY_FILE_ENV: str(tmp_path / "key")})


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret", True), ("bearer  s3cret ", True), (None, False), ("", False), ("Bearer", False),
    ("Bearer s3cre", False), ("Bearer s3cretx", False), ("Basic s3cret", False), ("s3cret", False),
])
def test_only_the_key_as_a_bearer_token_is_authorized(header: str | None, ok: bool) -> None:
    assert shared_key.authorized(header, "s3cret") is ok


def test_refusals_look_like_torchserves_to_the_clients() -> None:
    from handler import contract

    body = json.dumps({"error": shared_key.REFUSED_MESSAGE})
    assert contract.is_invalid_key_answer(shared_key.REFUSED_STATUS, body)


def test_the_container_config_publishes_inference_only(tmp_path: Path) -> None:
    target = tmp_path / "config.properties"
    entrypoint.write_config(REPO / "config.properties", entrypoint.settings(metrics=False, gpus=None), target)
    props = dict(line.split("=", 1) for line in target.read_text().splitlines() if "=" in line and line[0] != "#")
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["disable_token_authorization"] == "true" and props["enable_model_api"] == "false"
    assert "number_of_gpu" not in props  # TorchServe counts the GPUs the container was given
    assert props["max_response_size"] == "314572800"  # the project's limits carry over
    entrypoint.write_config(REPO / "config.properties", entrypoint.settings(metrics=True, gpus="1"), target)
    text = target.read_text()
    assert "metrics_address=http://0.0.0.0:8082" in text and "number_of_gpu=1" in text


def test_the_health_check_needs_a_ready_worker() -> None:
    assert healthcheck.ready_workers([{"workers": [{"status": "READY"}, {"status": "UNLOADING"}]}]) == (1, 2)
    assert healthcheck.ready_workers([{"workers": [{"status": "UNLOADING"}]}]) == (0, 1)
    assert healthcheck.ready_workers([{"workers": []}]) == (0, 0)
    assert healthcheck.ready_workers({"unexpected": True}) == (0, 0)


def test_the_dockerfile_is_the_containerfile() -> None:
    """``docker build .`` reads Dockerfile, ``podman build .`` Containerfile: one file under both names."""
    assert (REPO / "Dockerfile").resolve() == (REPO / "Containerfile").resolve()
    assert (REPO / ".dockerignore").read_text() == (REPO / ".containerignore").read_text()


def test_the_manifests_fit_together() -> None:
    """What ``podman kube play`` cannot run (Service, autoscaler, disruption budget) at least names the
    Deployment's pods, its port and no other."""
    import yaml

    docs = {}
    for path in sorted((REPO / "deploy" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            docs[doc["kind"]] = doc
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert docs["Service"]["spec"]["selector"] == labels
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert [p["targetPort"] for p in docs["Service"]["spec"]["ports"]] == [8080]  # inference only
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][-1] == "/opt/replace-background/healthcheck.py"
    assert "ports" not in container  # podman kube play would publish a listed port on every host address
