"""Grid Engine's side of a batch cluster: its queue, its clients and how a node joins it.

Owns: qstat's XML and qconf's files (sge, pure), the client that runs Grid Engine's commands
(sge_client), the head made ready at start and a node registered (sge_head), the [plugin.X]
kinds as commands (node_plugins), the [volume.X] mounts (node_volumes), logging in to a node and
running them (node_ssh), the nodes' pinned SSH host keys (host_keys), taking a node out of Grid
Engine, only if empty for a scale-in (sge_deregister), the queue as the cluster's load source
(sge_source) and the head's part as controller.scheduler drives it (sge_side), and
`import-conf --starcluster` from a StarCluster config (starcluster_import, with starcluster_ini,
starcluster_clusters, starcluster_plugins, starcluster_draft).
May import: controller.config, controller.messages, controller.runtime.
"""
