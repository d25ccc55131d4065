"""Kubernetes: render the kustomize manifests and submit/watch Jobs. Never imports TensorFlow."""
