"""The topology as other runners want it: Kubernetes manifests, systemd template units."""
