"""Deploying raynas: the Ray Jobs launcher and the Kubernetes manifests (render and validate)."""
