"""Render and validate raynas' Kubernetes manifests (the kustomize tree in ``k8s/``).

The manifests ship inside the package as ``raynas.deploy.manifests`` (``k8s/`` at the top of the
repo, mapped there by pyproject.toml), so an installed raynas renders them from anywhere.

Everything here is offline: ``kubectl kustomize`` needs no cluster, core kinds are checked with the
schemas bundled in ``kubernetes-validate``, and KubeRay's ``RayCluster``/``RayJob`` against the CRD
schemas copied into ``k8s/crds/``. A plain CRD schema lets typos through (the API server silently
prunes unknown fields), so they are tightened first: unknown fields are rejected and fields that
have a default are not required. A broken manifest is thus caught before ``kubectl apply``, with the
path of the offending field.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from raynas.errors import RaynasError, did_you_mean

#: The package that holds the manifests (``k8s/`` in the repo): base/, overlays/<name>/, crds/.
MANIFESTS_PACKAGE = "raynas.deploy.manifests"

#: The command the RayJob runs; k8s/base/rayjob.yaml holds the same string (a test compares them)
#: and tests/deploy/test_cluster.py runs exactly this on a two-node Ray cluster. Nothing in it is
#: host-specific: the MLflow server and the results storage come from the head's environment
#: (MLFLOW_TRACKING_URI, RAYNAS_STORAGE).
DEFAULT_ENTRYPOINT = (
    "raynas search --address auto --space small_cnn --dataset mnist5k --num-trials 8 "
    "--max-epochs 9 --retrain-epochs 3 --experiment k8s-demo --resume auto --json"
)

#: Kubernetes version whose core schemas (from kubernetes-validate) objects are checked against.
KUBERNETES_VERSION = "1.32"

_CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}
_GPU = "nvidia.com/gpu"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on the CRDs


class KubeError(RaynasError, ValueError):
    """A manifest cannot be rendered, an override is invalid, or an object fails validation."""


# ------------------------------------------------------------------------------------ manifests


def manifests() -> Traversable:
    """The shipped manifests, as package data (read them with ``/``, ``read_text``, ``iterdir``)."""
    return resources.files(MANIFESTS_PACKAGE)


@contextlib.contextmanager
def manifests_dir() -> Iterator[Path]:
    """The shipped manifests as a real directory, which ``kubectl kustomize`` needs.

    An install made of files (a wheel, an editable install) gives its own folder; anything else
    (e.g. a zipped install) is copied into a temporary directory, removed on exit. (``as_file``
    materialises a directory only from Python 3.12 on.)
    """
    root = manifests()
    if isinstance(root, Path) and root.is_dir():
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="raynas-manifests-") as tmp:
        target = Path(tmp) / "manifests"
        _copy_tree(root, target)
        yield target


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            if entry.name != "__pycache__":
                _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


# --------------------------------------------------------------------------------------- render


def overlays() -> list[str]:
    """Names of the shipped overlays, k8s/overlays/<name> (what ``render(overlay=...)`` accepts)."""
    shipped = manifests() / "overlays"
    return sorted(p.name for p in shipped.iterdir() if (p / "kustomization.yaml").is_file())


def render(
    overlay: str | PathLike[str] = "cpu",
    *,
    image: str | None = None,
    namespace: str | None = None,
    workers: int | None = None,
    cpus: float | None = None,
    gpus: int | None = None,
    memory: str | None = None,
    entrypoint: str | None = None,
) -> list[dict]:
    """Build an overlay with ``kubectl kustomize`` and apply the overrides to the parsed objects.

    ``overlay`` is a name in k8s/overlays (``cpu``, ``gpu``) or the path of a kustomization
    directory (e.g. a user's overlay on top of ours). The overrides act on the Ray clusters, the
    RayJob's and the RayCluster's alike: ``image`` on every Ray container; ``workers`` = replicas of
    each worker group (its min/max widened to fit); ``cpus``/``memory`` = requests and limits of
    every worker; ``gpus`` = GPUs per worker of the GPU groups (the overlay must have one);
    ``entrypoint`` = the RayJob's command. ``namespace`` moves every namespaced object and renames
    the Namespace.
    """
    if str(overlay) in overlays():
        with manifests_dir() as root:
            objs = _kustomize(root / "overlays" / str(overlay))
    else:
        objs = _kustomize(_overlay_dir(overlay))
    clusters = list(_ray_cluster_specs(objs))
    if image is not None:
        if not isinstance(image, str) or not image or any(c.isspace() for c in image):
            raise KubeError(f"image must be a non-empty image reference, got {image!r}")
        for spec in clusters:
            for pod in _pod_specs(spec):
                for container in pod.get("containers", []):
                    container["image"] = image
        for job in _kind(objs, "RayJob"):
            submitter = job["spec"].get("submitterPodTemplate", {}).get("spec", {})
            for container in submitter.get("containers", []):
                container["image"] = image
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise KubeError(f"workers must be an integer >= 0, got {workers!r}")
        for group in _worker_groups(clusters):
            group["replicas"] = workers
            group["minReplicas"] = min(group.get("minReplicas", 0), workers)
            group["maxReplicas"] = max(group.get("maxReplicas", workers), workers)
    if cpus is not None:
        _set_worker_resource(clusters, "cpu", _cpu_quantity(cpus))
    if memory is not None:
        if not isinstance(memory, str) or not _QUANTITY.match(memory):
            raise KubeError(f"memory must be a Kubernetes quantity such as '8Gi', got {memory!r}")
        _set_worker_resource(clusters, "memory", memory)
    if gpus is not None:
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise KubeError(f"gpus must be an integer >= 1, got {gpus!r}")
        gpu_containers = [
            c
            for c in _worker_containers(clusters)
            if _GPU in c.get("resources", {}).get("limits", {})
        ]
        if not gpu_containers:
            raise KubeError(
                f"gpus={gpus}: overlay {str(overlay)!r} has no GPU worker group (use overlay='gpu')"
            )
        for container in gpu_containers:
            for part in ("requests", "limits"):
                container.setdefault("resources", {}).setdefault(part, {})[_GPU] = gpus
    if entrypoint is not None:
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise KubeError(f"entrypoint must be a non-empty command, got {entrypoint!r}")
        jobs = list(_kind(objs, "RayJob"))
        if not jobs:
            raise KubeError(f"entrypoint given but overlay {str(overlay)!r} renders no RayJob")
        for job in jobs:
            job["spec"]["entrypoint"] = entrypoint
    if namespace is not None:
        _set_namespace(objs, namespace)
    return objs


def _overlay_dir(overlay: str | PathLike[str]) -> Path:
    """The kustomization directory the caller names (not a shipped overlay's name)."""
    path = Path(overlay)
    if any(
        (path / f).is_file() for f in ("kustomization.yaml", "kustomization.yml", "Kustomization")
    ):
        return path
    hint = did_you_mean(overlay, overlays())
    raise KubeError(
        f"unknown overlay {str(overlay)!r}: expected one of {overlays()} "
        f"or a directory holding a kustomization.yaml{hint}"
    )


def _kustomize(directory: Path) -> list[dict]:
    """Run ``kubectl kustomize`` (offline: it never contacts a cluster) and parse its output."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise KubeError(
            "kubectl not found on PATH: install kubectl >= 1.27 (it renders the manifests "
            "with `kubectl kustomize`, offline)"
        )
    try:
        proc = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeError(f"kubectl kustomize {directory} could not run: {exc}") from exc
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no error output"]
        match = re.search(r'err="(.*)"\s*$', lines[-1])  # klog style: E1125 ... err="..."
        detail = match.group(1) if match else lines[-1]
        raise KubeError(f"kubectl kustomize {directory} failed: {detail}{_old_kustomize(kubectl)}")
    return [doc for doc in yaml.load_all(proc.stdout, Loader=_YAML_LOADER) if doc]


def _old_kustomize(kubectl: str) -> str:
    """A hint when kubectl embeds a kustomize older than v5 (Debian's kubectl 1.20 has v2)."""
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        version = json.loads(out).get("kustomizeVersion") or "older than v5"
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return ""
    major = re.match(r"v(\d+)", version)
    if major and int(major.group(1)) >= 5:
        return ""
    return f" (kubectl's kustomize is {version}: install kubectl >= 1.27, i.e. kustomize v5)"


def _kind(objs: Iterable[dict], kind: str) -> Iterator[dict]:
    return (o for o in objs if o.get("kind") == kind)


def _ray_cluster_specs(objs: Iterable[dict]) -> Iterator[dict]:
    """The RayCluster specs: each RayCluster's spec and each RayJob's rayClusterSpec."""
    for obj in objs:
        if obj.get("kind") == "RayCluster":
            yield obj["spec"]
        elif obj.get("kind") == "RayJob" and obj["spec"].get("rayClusterSpec"):
            yield obj["spec"]["rayClusterSpec"]


def _worker_groups(clusters: Iterable[dict]) -> Iterator[dict]:
    for spec in clusters:
        yield from spec.get("workerGroupSpecs", [])


def _pod_specs(cluster: dict) -> Iterator[dict]:
    yield cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["template"]["spec"]


def _worker_containers(clusters: Iterable[dict]) -> Iterator[dict]:
    """The Ray container of every worker pod (KubeRay's rule: the first container)."""
    for group in _worker_groups(clusters):
        yield group["template"]["spec"]["containers"][0]


def _set_worker_resource(clusters: list[dict], name: str, value: str) -> None:
    # Ray sizes a node from the limits; requests == limits keeps the scheduler honest.
    for container in _worker_containers(clusters):
        resources = container.setdefault("resources", {})
        for part in ("requests", "limits"):
            resources.setdefault(part, {})[name] = value


def _cpu_quantity(cpus: float) -> str:
    """2 -> '2', 0.5 -> '500m': CRDs take CPU as int-or-string, never as a float."""
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not cpus > 0:
        raise KubeError(f"cpus must be a number > 0, got {cpus!r}")
    millis = round(cpus * 1000)
    if millis < 1:
        raise KubeError(f"cpus must be at least 0.001 (1 millicore), got {cpus!r}")
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _set_namespace(objs: list[dict], namespace: str) -> None:
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        raise KubeError(
            f"namespace must be a DNS-1123 label (lowercase letters, digits, '-'; at "
            f"most 63 characters), got {namespace!r}"
        )
    for obj in objs:
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") == "Namespace":
            meta["name"] = namespace
        elif obj.get("kind") not in _CLUSTER_SCOPED:
            meta["namespace"] = namespace
        for subject in obj.get("subjects", []) if obj.get("kind", "").endswith("Binding") else []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def to_yaml(objs: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML for ``kubectl apply -f -``; long strings stay on one line."""
    return yaml.safe_dump_all(
        [dict(o) for o in objs],
        explicit_start=True,
        sort_keys=False,
        default_flow_style=False,
        width=2**31 - 1,
    )


# ------------------------------------------------------------------------------------- validate


def validate(obj: Mapping[str, Any]) -> None:
    """Raise KubeError naming the object and the path of its first problem; return if it is valid.

    Core kinds use kubernetes-validate's strict schemas (unknown fields rejected); RayCluster and
    RayJob use the KubeRay CRD schemas in k8s/crds/, tightened as the module docstring says.
    """
    if not isinstance(obj, Mapping):
        raise KubeError(f"expected a Kubernetes object (a mapping), got {type(obj).__name__}")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    label = f"{kind or '?'}/{name or '?'}"
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise KubeError(f"{label}: <root>: apiVersion and kind are required strings")
    if kind in _CRD_FILES and api_version.startswith("ray.io/"):
        version = api_version.removeprefix("ray.io/")
        served = _crd_versions(kind)
        if version not in served:
            raise KubeError(
                f"{label}: apiVersion: {api_version} is not served by the KubeRay CRD "
                f"(served: {', '.join('ray.io/' + v for v in served)})"
            )
        validator = _crd_validator(kind, version)
        errors = sorted(validator.iter_errors(obj), key=lambda e: _doc_order(obj, e.absolute_path))
        if errors:
            path, message = _describe(errors[0])
            raise KubeError(f"{label}: {_format_path(path)}: {message}")
        _check_replicas(obj, label)
        return
    _validate_core(obj, label)


def _validate_core(obj: Mapping[str, Any], label: str) -> None:
    import kubernetes_validate  # imported here: only core kinds need it

    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path, message = _describe(exc)
        raise KubeError(f"{label}: {_format_path(path)}: {message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise KubeError(
            f"{label}: no schema for {obj['apiVersion']} {obj['kind']}: neither a "
            f"Kubernetes {KUBERNETES_VERSION} kind nor a KubeRay RayCluster/RayJob"
        ) from None


def _check_replicas(obj: Mapping[str, Any], label: str) -> None:
    """KubeRay silently clamps replicas into [minReplicas, maxReplicas]: call that a mistake."""
    spec = obj.get("spec", {})
    base = ["spec"]
    if obj["kind"] == "RayJob":
        spec, base = spec.get("rayClusterSpec") or {}, ["spec", "rayClusterSpec"]
    for i, group in enumerate(spec.get("workerGroupSpecs", [])):
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        path = [*base, "workerGroupSpecs", i]
        if low > high:
            raise KubeError(
                f"{label}: {_format_path([*path, 'minReplicas'])}: minReplicas {low} "
                f"is greater than maxReplicas {high}"
            )
        replicas = group.get("replicas", low)
        if not low <= replicas <= high:
            raise KubeError(
                f"{label}: {_format_path([*path, 'replicas'])}: replicas {replicas} "
                f"is outside [minReplicas {low}, maxReplicas {high}]"
            )


@functools.cache
def _crd_versions(kind: str) -> dict[str, dict]:
    """The served versions of a KubeRay CRD: name -> its openAPIV3Schema (parsed once)."""
    text = (manifests() / "crds" / _CRD_FILES[kind]).read_text(encoding="utf-8")
    crd = yaml.load(text, Loader=_YAML_LOADER)
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


@functools.cache
def _crd_validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    """A validator for one served version of a KubeRay CRD, built once per process."""
    schema = _tighten(_crd_versions(kind)[version])
    schema["properties"]["metadata"] = _OBJECT_META
    return _CrdValidator(schema)


def _tighten(node: Any) -> Any:
    """OpenAPI v3 (CRD flavour) -> JSON schema that rejects what the API server would drop.

    - ``properties`` without ``additionalProperties``/preserve-unknown-fields: closed object;
    - ``required`` minus the fields that have a default (the API server fills those in);
    - ``x-kubernetes-int-or-string``: integer or string; ``nullable``: null allowed too;
    - ``format: int32/int64``: the range checked.
    """
    if isinstance(node, list):
        return [_tighten(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _tighten(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = _tighten(value)
        else:  # keywords and data (default, enum, x-kubernetes-validations): kept as they are
            out[key] = value
    props = out.get("properties")
    if props is not None:
        open_ended = "additionalProperties" in out or out.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if not open_ended:
            out["additionalProperties"] = False
        if "required" in out:
            out["required"] = [r for r in out["required"] if "default" not in props.get(r, {})]
    if out.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
        if out.get("anyOf") == [{"type": "integer"}, {"type": "string"}]:
            del out["anyOf"]  # the same thing, with a vaguer error message
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("format") in _INT_RANGES and out.get("type") == "integer":
        low, high = _INT_RANGES[out["format"]]
        out["minimum"] = max(out.get("minimum", low), low)
        out["maximum"] = min(out.get("maximum", high), high)
    return out


def _unique_list_keys(validator: Any, list_type: str, instance: Any, schema: dict) -> Iterator:
    """``x-kubernetes-list-type``: map keys (e.g. container/env names) and set items are unique."""
    if list_type not in ("map", "set") or not isinstance(instance, list):
        return
    keys = schema.get("x-kubernetes-list-map-keys", []) if list_type == "map" else []
    defaults = schema.get("items", {}).get("properties", {})
    seen: dict[Any, int] = {}
    for index, item in enumerate(instance):
        if keys and not isinstance(item, dict):
            continue
        key = (
            tuple(repr(item.get(k, defaults.get(k, {}).get("default"))) for k in keys)
            if keys
            else repr(item)
        )
        if key in seen:
            what = ", ".join(
                f"{k}={item.get(k, defaults.get(k, {}).get('default'))!r}" for k in keys
            ) or repr(item)
            yield jsonschema.ValidationError(
                f"duplicate entry ({what}), also at [{seen[key]}]", path=[index]
            )
        else:
            seen[key] = index


_CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-type": _unique_list_keys}
)

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# The CRDs leave metadata open (the API server checks ObjectMeta itself): a light ObjectMeta.
_OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 63, "pattern": _DNS1035_LABEL},  # KubeRay's rule
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS1123_LABEL.pattern},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        **{
            k: {}
            for k in (
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "ownerReferences",
                "selfLink",
            )
        },
    },
}


def _describe(error: jsonschema.ValidationError) -> tuple[list[Any], str]:
    """(path, one-line message) of an error, pointing at the field rather than at its parent."""
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = error.schema.get("properties", {})
        extra = next((k for k in instance if k not in known), None)
        if extra is not None:
            return [*path, extra], f"unknown field{did_you_mean(extra, known)}"
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = next((r for r in error.validator_value if r not in instance), None)
        if missing is not None:
            return [*path, missing], "missing required field"
    if error.validator == "pattern" and "[KMGTPE]i" in str(error.validator_value):
        return path, f"{instance!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5, 4Gi)"
    message = " ".join(str(error.message).split())
    return path, message if len(message) <= 200 else message[:197] + "..."


def _doc_order(obj: Any, path: Iterable[Any]) -> tuple[int, ...]:
    """A path's position in document order: the problem reported is the first in the file."""
    order = []
    node = obj
    for step in path:
        if isinstance(node, Mapping):
            order.append(list(node).index(step) if step in node else len(node))
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            order.append(step)
            node = node[step]
        else:
            break
    return tuple(order)


def _format_path(path: Iterable[Any]) -> str:
    """['spec', 'containers', 0, 'image'] -> 'spec.containers[0].image'."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(step)):
            text += f".{step}" if text else str(step)
        else:
            text += f"[{str(step)!r}]"
    return text or "<root>"
