"""The one-machine cluster: network namespaces as nodes, each with its own dockerd and slurmd."""
