"""Grid Engine's side of a batch cluster: its queue, its clients and how a node joins it.

Owns: qstat's XML and qconf's files (sge, pure), the client that runs Grid Engine's commands
(sge_client), the [plugin.X] kinds as commands (node_plugins), the [volume.X] mounts
(node_volumes), the nodes' pinned SSH host keys (host_keys), taking a node out of Grid Engine
(sge_deregister) and `import-conf --starcluster` from a StarCluster config (starcluster_import,
with starcluster_ini, starcluster_clusters, starcluster_plugins, starcluster_draft).
May import: controller.config, controller.messages.
"""
