#!/usr/bin/env bash
# Render the KubeRay manifests for a search (a RayJob running `raynas search --address auto <search
# flags>`, the RayCluster, MLflow, PostgreSQL, MinIO), validated; print them, or apply them, e.g.
#   launchers/k8s.sh --image ghcr.io/you/raynas:1.0 --workers 2 -- --space small_cnn
#   launchers/k8s.sh --image ghcr.io/you/raynas:1.0 --apply -- --space small_cnn
# Options (--overlay gpu, --namespace, --cpus, --gpus, --memory, …): `raynas launch k8s --help`.
exec raynas launch k8s "$@"
