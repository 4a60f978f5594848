"""The Kubernetes manifests (k8s/): rendered with the real `kubectl kustomize`, validated offline.

Core kinds are checked against kubernetes-validate's schemas, RayCluster/RayJob against KubeRay's
CRD schemas with unknown fields rejected. No cluster and no network needed. The manifests are read
as package data (``raynas.deploy.manifests``), as an installed wheel has them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shlex
import shutil
import sys
import zipfile
import zipimport
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import yaml

from raynas.deploy import kube
from raynas.errors import RaynasError

REPO_K8S = Path(__file__).resolve().parents[2] / "k8s"

GPU = "nvidia.com/gpu"
ALL_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Secret",
    "PersistentVolumeClaim",
    "RayCluster",
    "RayJob",
    "Deployment",
    "Service",
    "Job",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every shipped overlay, rendered once by the real kubectl."""
    return {name: kube.render(name) for name in kube.overlays()}


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def clusters(objs: list[dict]) -> list[dict]:
    """The RayCluster's spec and the RayJob's rayClusterSpec."""
    return [one(objs, "RayCluster")["spec"], one(objs, "RayJob")["spec"]["rayClusterSpec"]]


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) for every pod template in an object."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        yield obj["metadata"]["name"], spec["template"]["spec"]
    cluster = spec.get("rayClusterSpec", spec) if obj["kind"] in ("RayCluster", "RayJob") else {}
    if cluster:
        yield f"{obj['metadata']['name']}/head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{obj['metadata']['name']}/{group['groupName']}", group["template"]["spec"]


def rejected(obj: dict) -> str:
    with pytest.raises(kube.KubeError) as info:
        kube.validate(obj)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------ rendering


def test_every_overlay_renders_the_whole_stack(rendered):
    assert set(rendered) == {"cpu", "gpu"}
    for objs in rendered.values():
        assert {o["kind"] for o in objs} == ALL_KINDS
        for obj in objs:
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == "raynas", obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_rendered_object_validates(rendered, overlay):
    for obj in rendered[overlay]:
        kube.validate(obj)


def test_every_container_has_resources_and_every_server_probes(rendered):
    for objs in rendered.values():
        for obj in objs:
            for where, pod in pod_specs(obj):
                for container in pod["containers"]:
                    resources = container.get("resources", {})
                    assert resources.get("requests") and resources.get("limits"), where
                    if obj["kind"] != "Job":  # a run-to-completion pod has nothing to probe
                        assert "readinessProbe" in container and "livenessProbe" in container, where


def test_gpu_overlay_adds_a_gpu_worker_group_and_cpu_overlay_has_none(rendered):
    assert GPU not in kube.to_yaml(rendered["cpu"])  # no limits, tolerations, selectors
    assert GPU in kube.to_yaml(rendered["gpu"])
    for cluster in clusters(rendered["gpu"]):
        gpu_groups = [
            g
            for g in cluster["workerGroupSpecs"]
            if GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"]
        ]
        assert len(gpu_groups) == 1
        pod = gpu_groups[0]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"][GPU] >= 1
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"]
        assert any(g["groupName"] == "cpu" for g in cluster["workerGroupSpecs"])
        assert cluster["enableInTreeAutoscaling"] is True


def test_rayjob_runs_the_default_entrypoint_and_cleans_up(rendered):
    for objs in rendered.values():
        job = one(objs, "RayJob")["spec"]
        assert job["entrypoint"] == kube.DEFAULT_ENTRYPOINT
        assert job["shutdownAfterJobFinishes"] is True
        assert job["ttlSecondsAfterFinished"] > 0 and job["backoffLimit"] >= 1
    # The entrypoint is written once in the manifests: the base RayJob.
    base = (REPO_K8S / "base" / "rayjob.yaml").read_text()
    assert yaml.safe_load(base)["spec"]["entrypoint"] == kube.DEFAULT_ENTRYPOINT
    assert sum(p.read_text().count("raynas search") for p in REPO_K8S.rglob("*.yaml")) == 1
    # Host-specific settings come from the head's environment, so tests/deploy/test_cluster.py
    # runs this very command on a two-node Ray cluster.
    args = shlex.split(kube.DEFAULT_ENTRYPOINT)
    assert args[:4] == ["raynas", "search", "--address", "auto"]
    assert not {"--tracking-uri", "--storage"} & set(args)


def test_every_ray_cluster_uses_token_authentication_with_the_token_of_a_secret(rendered):
    """Ray 2.61 turns token authentication on for every cluster: KubeRay gives the Ray
    containers the token of the Secret that ``authOptions.secretName`` names."""
    for objs in rendered.values():
        for cluster in clusters(objs):
            assert cluster["authOptions"] == {"mode": "token", "secretName": "raynas-ray-auth"}
        secret = one(objs, "Secret", "raynas-ray-auth")
        assert set(secret["stringData"]) == {"auth_token"}  # KubeRay's key
        assert secret["metadata"]["namespace"] == one(objs, "RayJob")["metadata"]["namespace"]


def test_a_wrong_auth_mode_is_rejected(rayjob):
    rayjob["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    message = rejected(rayjob)
    assert message.startswith("RayJob/raynas-search: ") and "authOptions.mode" in message


def head_env(cluster: dict) -> dict[str, str]:
    container = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_results_volume_is_shared_by_head_and_workers(rendered):
    for objs in rendered.values():
        claim = one(objs, "PersistentVolumeClaim", "raynas-results")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        for cluster in clusters(objs):
            storage = head_env(cluster)["RAYNAS_STORAGE"]  # the search's --storage default
            pods = [cluster["headGroupSpec"]["template"]["spec"]]
            pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
            for pod in pods:
                volumes = {v["name"]: v for v in pod["volumes"]}
                (mount,) = pod["containers"][0]["volumeMounts"]
                claim_name = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
                assert claim_name == "raynas-results"
                assert storage.startswith(mount["mountPath"] + "/")


def test_mlflow_server_uses_postgres_s3_and_secret_credentials(rendered):
    objs = rendered["cpu"]
    (container,) = one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    command = container["command"] + container["args"]
    assert command[:2] == ["mlflow", "server"]
    flag = {a: b for a, b in zip(command, command[1:], strict=False)}
    assert flag["--backend-store-uri"].startswith("postgresql://")
    assert flag["--artifacts-destination"] == "s3://mlflow/"
    assert flag["--host"] == "0.0.0.0" and "--serve-artifacts" in command
    secret = one(objs, "Secret", "raynas-credentials")
    env = {e["name"]: e for e in container["env"]}
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    service = one(objs, "Service", "mlflow")
    assert service["spec"]["ports"][0]["port"] == 5000
    for cluster in clusters(objs):  # where the search driver runs: its MLflow is this server
        assert head_env(cluster)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert one(objs, "Job", "minio-create-bucket")


# ------------------------------------------------------------------------------------ overrides


def test_overrides_show_up_in_the_rendered_objects():
    objs = kube.render(
        "gpu",
        image="ghcr.io/acme/raynas:1.2.3",
        namespace="nas-team",
        workers=3,
        cpus=1.5,
        gpus=2,
        memory="12Gi",
        entrypoint="raynas search --space mlp --budget 5 --json",
    )
    for obj in objs:
        kube.validate(obj)
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "nas-team"
        else:
            assert obj["metadata"]["namespace"] == "nas-team"
    assert (
        one(objs, "RayJob")["spec"]["entrypoint"] == "raynas search --space mlp --budget 5 --json"
    )
    for cluster in clusters(objs):
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["image"] == "ghcr.io/acme/raynas:1.2.3"
        for group in cluster["workerGroupSpecs"]:
            assert group["replicas"] == 3
            assert group["minReplicas"] <= 3 <= group["maxReplicas"]
            worker = group["template"]["spec"]["containers"][0]
            assert worker["image"] == "ghcr.io/acme/raynas:1.2.3"
            for part in ("requests", "limits"):
                assert worker["resources"][part]["cpu"] == "1500m"
                assert worker["resources"][part]["memory"] == "12Gi"
            if group["groupName"] == "gpu":
                assert worker["resources"]["limits"][GPU] == 2
    # Only the Ray containers take the raynas image.
    mlflow = one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["image"].startswith("ghcr.io/mlflow/mlflow:")


def test_whole_cpus_stay_whole_and_workers_widen_the_bounds():
    objs = kube.render("cpu", cpus=4, workers=10)
    for cluster in clusters(objs):
        (group,) = cluster["workerGroupSpecs"]
        assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "4"
        assert group["replicas"] == group["maxReplicas"] == 10
    zero = kube.render("cpu", workers=0)
    for cluster in clusters(zero):
        assert cluster["workerGroupSpecs"][0]["replicas"] == 0
        assert cluster["workerGroupSpecs"][0]["minReplicas"] == 0
    for obj in objs + zero:
        kube.validate(obj)


def test_user_overlay_can_retag_the_image_with_kustomize(tmp_path: Path):
    # kustomize's `images:` must reach the containers nested in RayCluster/RayJob (v5 does).
    overlay = tmp_path / "mine"
    overlay.mkdir()
    with kube.manifests_dir() as shipped:
        base = os.path.relpath(shipped / "overlays" / "gpu", overlay)  # kustomize: relative paths
        (overlay / "kustomization.yaml").write_text(
            f"resources: [{base}]\nimages:\n  - {{name: raynas, newName: reg.example/raynas, "
            f"newTag: v7}}\n"
        )
        objs = kube.render(overlay)
    images = {
        c["image"]
        for cluster in clusters(objs)
        for pod in [cluster["headGroupSpec"]["template"]["spec"]]
        + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
        for c in pod["containers"]
    }
    assert images == {"reg.example/raynas:v7"}


@pytest.mark.parametrize(
    ("overlay", "kwargs", "match"),
    [
        ("tpu", {}, "unknown overlay 'tpu'"),
        ("cpu", {"gpus": 1}, "no GPU worker group"),
        ("gpu", {"gpus": 0}, "gpus must be an integer >= 1"),
        ("cpu", {"workers": -1}, "workers must be an integer >= 0"),
        ("cpu", {"workers": 2.5}, "workers must be an integer >= 0"),
        ("cpu", {"cpus": 0}, "cpus must be a number > 0"),
        ("cpu", {"memory": "lots"}, "memory must be a Kubernetes quantity"),
        ("cpu", {"namespace": "NAS_team"}, "namespace must be a DNS-1123 label"),
        ("cpu", {"image": "my image"}, "image must be"),
        ("cpu", {"entrypoint": "  "}, "entrypoint must be"),
    ],
)
def test_bad_overrides_are_rejected(overlay, kwargs, match):
    with pytest.raises(kube.KubeError, match=match) as info:
        kube.render(overlay, **kwargs)
    assert isinstance(info.value, RaynasError) and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------------- package data


def _install_manifests_module(monkeypatch, spec) -> None:
    """Make ``raynas.deploy.manifests`` import from ``spec`` (importlib.resources follows it)."""
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, kube.MANIFESTS_PACKAGE, module)


def test_the_package_data_holds_every_manifest_of_the_repo():
    shipped = resources.files(kube.MANIFESTS_PACKAGE)
    wanted = [p.relative_to(REPO_K8S) for p in REPO_K8S.rglob("*") if p.suffix == ".yaml"]
    assert len(wanted) >= 15
    for rel in [*wanted, Path("crds", "NOTICE")]:
        assert shipped.joinpath(*rel.parts).read_bytes() == (REPO_K8S / rel).read_bytes(), rel


def test_manifests_are_rendered_from_the_package_data_not_the_source_tree(tmp_path, monkeypatch):
    # A copy of the package data away from the repo, imported as raynas.deploy.manifests (as an
    # installed wheel has it): a k8s/ path found from kube.py's own location would not see it.
    with resources.as_file(resources.files(kube.MANIFESTS_PACKAGE)) as source:
        target = tmp_path / "site-packages" / "raynas" / "deploy" / "manifests"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    _install_manifests_module(
        monkeypatch,
        importlib.util.spec_from_file_location(
            kube.MANIFESTS_PACKAGE, target / "__init__.py", submodule_search_locations=[str(target)]
        ),
    )
    rayjob = target / "base" / "rayjob.yaml"
    rayjob.write_text(rayjob.read_text().replace(kube.DEFAULT_ENTRYPOINT, "raynas search --x 1"))
    shutil.copytree(target / "overlays" / "cpu", target / "overlays" / "edge")

    assert Path(str(kube.manifests())) == target
    assert kube.overlays() == ["cpu", "edge", "gpu"]
    for name in ("cpu", "edge"):
        objs = kube.render(name)
        assert one(objs, "RayJob")["spec"]["entrypoint"] == "raynas search --x 1"
        for obj in objs:
            kube.validate(obj)


def test_manifests_render_from_a_zipped_install(tmp_path, monkeypatch):
    # No real directory to hand to kubectl: manifests_dir() copies the tree out, then removes it.
    archive = tmp_path / "raynas.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(REPO_K8S.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, "raynas/deploy/manifests/" + path.relative_to(REPO_K8S).as_posix())
    loader = zipimport.zipimporter(f"{archive}/raynas/deploy/")
    _install_manifests_module(monkeypatch, loader.find_spec(kube.MANIFESTS_PACKAGE))
    assert not isinstance(kube.manifests(), Path)

    with kube.manifests_dir() as copied:
        assert (copied / "overlays" / "gpu" / "kustomization.yaml").is_file()
    assert not copied.exists()
    objs = kube.render("gpu", gpus=2)
    assert {o["kind"] for o in objs} == ALL_KINDS
    for obj in objs:
        kube.validate(obj)


def test_missing_kubectl_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an environment without kubectl
    with pytest.raises(kube.KubeError, match="kubectl not found on PATH"):
        kube.render("cpu")


def test_to_yaml_round_trips_and_keeps_the_entrypoint_on_one_line(rendered):
    objs = rendered["gpu"]
    text = kube.to_yaml(objs)
    assert list(yaml.safe_load_all(text)) == objs
    assert text.count("\n---") + text.startswith("---") == len(objs)
    assert f"entrypoint: {kube.DEFAULT_ENTRYPOINT}\n" in text


# ----------------------------------------------------------------------------------- validation


@pytest.fixture()
def rayjob(rendered) -> dict:
    return copy.deepcopy(one(rendered["gpu"], "RayJob"))


def test_typo_in_rayjob_is_rejected(rayjob):
    # A plain CRD schema accepts this (the API server would silently drop the field).
    rayjob["spec"]["shutdownAfterJobFinish"] = rayjob["spec"].pop("shutdownAfterJobFinishes")
    assert rejected(rayjob) == (
        "RayJob/raynas-search: spec.shutdownAfterJobFinish: unknown field "
        "(did you mean 'shutdownAfterJobFinishes'?)"
    )


def test_typo_deep_in_a_pod_template_is_rejected(rayjob):
    worker = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]
    worker["containers"][0]["resource"] = worker["containers"][0].pop("resources")
    assert rejected(rayjob).startswith(
        "RayJob/raynas-search: spec.rayClusterSpec.workerGroupSpecs[1].template.spec"
        ".containers[0].resource: unknown field"
    )


WORKER_LIMITS = ["rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "containers", 0,
                 "resources", "limits"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["backoffLimit"], "two", "spec.backoffLimit: 'two' is not of type 'integer'"),
        (["shutdownAfterJobFinishes"], "yes", "spec.shutdownAfterJobFinishes: 'yes' is not of"),
        (["backoffLimit"], 2**40, "spec.backoffLimit: 1099511627776 is greater than the maximum"),
        (
            [*WORKER_LIMITS, "cpu"],
            0.5,
            "containers[0].resources.limits.cpu: 0.5 is not of type 'integer', 'string'",
        ),
        (
            [*WORKER_LIMITS, "memory"],
            "4 GB",
            "containers[0].resources.limits.memory: '4 GB' is not a Kubernetes quantity",
        ),
    ],
)
def test_wrong_types_are_rejected(rayjob, path, value, expected):
    node = rayjob["spec"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    message = rejected(rayjob)
    assert message.startswith("RayJob/raynas-search: ") and expected in message


def test_missing_required_field_is_rejected(rayjob):
    del rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert rejected(rayjob) == (
        "RayJob/raynas-search: spec.rayClusterSpec.workerGroupSpecs[0].groupName: "
        "missing required field"
    )
    del rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "name"
    ]
    # The first problem in document order is reported.
    assert "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].name: missing" in (
        rejected(rayjob)
    )


def test_required_fields_with_a_default_may_be_left_out(rayjob):
    group = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    del group["maxReplicas"]  # required by the CRD, but defaulted by the API server
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert all("protocol" not in p for p in head["containers"][0]["ports"])  # also defaulted
    kube.validate(rayjob)


def test_int_or_string_fields_take_both(rayjob):
    probe = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "readinessProbe"
    ]
    probe["httpGet"]["port"] = "dashboard-agent"
    kube.validate(rayjob)
    probe["httpGet"]["port"] = 52365
    kube.validate(rayjob)
    probe["httpGet"]["port"] = [52365]
    assert "readinessProbe.httpGet.port: [52365] is not of type" in rejected(rayjob)


def test_duplicate_list_keys_and_bad_replicas_are_rejected(rayjob):
    bad = copy.deepcopy(rayjob)
    head = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"].append({"name": "MLFLOW_TRACKING_URI", "value": "http://elsewhere:5000"})
    last = len(head["env"]) - 1
    assert f"containers[0].env[{last}]: duplicate entry (name='MLFLOW_TRACKING_URI')" in rejected(
        bad
    )
    group = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["replicas"] = group["maxReplicas"] + 1
    assert "workerGroupSpecs[0].replicas: replicas" in rejected(rayjob)


def test_raycluster_is_validated_too(rendered):
    cluster = copy.deepcopy(one(rendered["cpu"], "RayCluster"))
    cluster["spec"]["enableInTreeAutoscalling"] = cluster["spec"].pop("enableInTreeAutoscaling")
    assert rejected(cluster) == (
        "RayCluster/raynas: spec.enableInTreeAutoscalling: unknown field "
        "(did you mean 'enableInTreeAutoscaling'?)"
    )
    cluster = copy.deepcopy(one(rendered["cpu"], "RayCluster"))
    cluster["metadata"]["name"] = "Raynas_Cluster"
    assert "RayCluster/Raynas_Cluster: metadata.name: " in rejected(cluster)


def test_core_kinds_are_validated_with_unknown_fields_rejected(rendered):
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment", "mlflow"))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    assert rejected(deployment) == (
        "Deployment/mlflow: spec.replica: unknown field (did you mean 'replicas'?)"
    )
    service = copy.deepcopy(one(rendered["cpu"], "Service", "mlflow"))
    service["spec"]["ports"][0]["port"] = "five thousand"
    assert rejected(service).startswith("Service/mlflow: spec.ports[0].port: 'five thousand'")
    job = copy.deepcopy(one(rendered["cpu"], "Job"))
    del job["spec"]["template"]["spec"]["containers"][0]["name"]
    assert rejected(job) == (
        "Job/minio-create-bucket: spec.template.spec.containers[0].name: missing required field"
    )


def test_unknown_kinds_and_versions_are_not_waved_through(rayjob):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "Widget/w: no schema for example.com/v1 Widget" in rejected(widget)
    rayjob["apiVersion"] = "ray.io/v2"
    assert "RayJob/raynas-search: apiVersion: ray.io/v2 is not served" in rejected(rayjob)
    with pytest.raises(kube.KubeError, match="expected a Kubernetes object"):
        kube.validate(["not", "an", "object"])  # type: ignore[arg-type]
