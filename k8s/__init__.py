"""raynas' Kubernetes manifests, shipped inside the package as ``raynas.deploy.manifests``."""
