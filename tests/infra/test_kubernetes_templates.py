"""infra_templates/kubernetes and docker-compose: the KEDA ScaledJob for workers on spot GPU nodes, locked-down
pods with limits, the API, controller and Redis, and the local docker-compose stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from tests.infra.terraform import IDLE_TIMEOUT_S, REPO, TEMPLATES

#: How each platform labels spot nodes: Karpenter, EKS managed node groups, GKE, AKS.
SPOT_NODE_LABELS = {
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
}


def _k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((TEMPLATES / "kubernetes").glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def _find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in documents:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_kustomization_lists_every_manifest() -> None:
    folder = TEMPLATES / "kubernetes"
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present


def test_workers_are_a_keda_scaled_job_on_spot_gpu_nodes_with_idle_timeout() -> None:
    documents = _k8s_documents()
    job = _find(documents, "ScaledJob", "sdqueue-worker")
    assert job["apiVersion"].startswith("keda.sh/")
    spec = job["spec"]
    assert spec.get("minReplicaCount", 0) == 0
    trigger = spec["triggers"][0]
    assert trigger["type"] == "metrics-api"
    assert trigger["metadata"]["url"].endswith("/v1/scaling")
    assert trigger["metadata"]["valueLocation"] == "work_remaining"
    assert trigger["metadata"]["authMode"] == "bearer"
    _find(documents, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    pod = spec["jobTargetRef"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for term in terms:  # the terms are ORed: each alternative must select spot capacity by itself
        selected = {
            (e["key"], value) for e in term["matchExpressions"] if e["operator"] == "In" for value in e["values"]
        }
        assert selected and selected <= SPOT_NODE_LABELS, term
    tolerated = {t["key"] for t in pod["tolerations"]}
    assert {"nvidia.com/gpu", "cloud.google.com/gke-spot", "kubernetes.azure.com/scalesetpriority"} <= tolerated
    (worker,) = pod["containers"]
    assert worker["args"] == ["worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = _env(worker)
    assert int(env["SDQ_IDLE_TIMEOUT_S"]) == IDLE_TIMEOUT_S
    assert env["SDQ_RETIRE"] == "kubernetes"
    assert env["SDQ_CAPACITY_TYPE"] == "spot"
    assert env["SDQ_MODEL_CACHE_DIR"] == "/models"
    assert any(m["mountPath"] == "/models" for m in worker["volumeMounts"])
    rules = spec["jobTargetRef"]["podFailurePolicy"]["rules"]
    assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules)


def _pod_specs(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in documents:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "ScaledJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTargetRef"]["template"]["spec"]


def test_every_pod_is_locked_down_with_limits() -> None:
    specs = dict(_pod_specs(_k8s_documents()))
    assert {"sdqueue-api", "sdqueue-controller", "sdqueue-redis", "sdqueue-worker", "sdqueue-webhooks"} <= set(specs)
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] >= 10000, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name


def test_api_controller_and_redis() -> None:
    documents = _k8s_documents()
    for name in ("sdqueue-api", "sdqueue-controller"):
        (container,) = _find(documents, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"] and container["livenessProbe"], name
    api = _find(documents, "Deployment", "sdqueue-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert _env(api)["SDQ_AUTH"] == "required"
    assert _find(documents, "Service", "sdqueue-api")["spec"]["ports"][0]["port"] == 8000
    controller = _find(documents, "Deployment", "sdqueue-controller")
    assert controller["spec"]["replicas"] == 1 and controller["spec"]["strategy"]["type"] == "Recreate"
    assert _env(controller["spec"]["template"]["spec"]["containers"][0])["SDQ_PROVIDER"] == "kubernetes"
    redis = _find(documents, "StatefulSet", "sdqueue-redis")["spec"]["template"]["spec"]["containers"][0]
    assert "--requirepass" in redis["args"] and "noeviction" in redis["args"]
    deny = _find(documents, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_docker_compose_runs_the_local_stack() -> None:
    compose = yaml.safe_load((TEMPLATES / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "controller", "webhooks"} <= set(services)
    for name in ("api", "worker", "controller", "webhooks"):
        service = services[name]
        assert service["command"] == [name]
        assert (TEMPLATES / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
            REPO / "Dockerfile"
        )
        assert service["environment"]["SDQ_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "--requirepass" in services["redis"]["command"]
    worker = services["worker"]["environment"]
    assert worker["SDQ_IDLE_TIMEOUT_S"].startswith("${SDQ_IDLE_TIMEOUT_S:-")
    assert worker["SDQ_MODEL_CACHE_DIR"] == "/models"
    gpu = yaml.safe_load((TEMPLATES / "docker-compose.gpu.yml").read_text())
    (device,) = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
