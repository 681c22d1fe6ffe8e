"""Slurm's side of a batch cluster (`load_source = "slurm"`): its queue, its client and a node's
removal.

Owns: `squeue --json` and `sinfo --json` read into the QueueSample the policy reads (slurm_queue,
pure), the client that runs Slurm's commands on the head (slurm_client), and taking a dynamic
node out of Slurm, only if empty, for a scale-in: drain, look again, delete (slurm_release); the
queue as the cluster's load source (slurm_source) and the head's part for a node joining and
leaving, as controller.scheduler drives it (slurm_side: no registration, the node's slurmd joins
by itself; ready once sinfo lists it; a lost node set DOWN and deleted).
How a node joins Slurm (`[plugin.X] kind = "slurm"`) is a node command, beside the other plugin
kinds in controller.gridengine.node_plugins.
May import: controller.config, controller.messages, controller.runtime.
"""
