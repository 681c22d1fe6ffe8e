"""Slurm's side of a batch cluster (`load_source = "slurm"`): its queue, its client and a node's
removal.

Owns: `squeue --json` and `sinfo --json` read into the QueueSample the policy reads (slurm_queue,
pure), the client that runs Slurm's commands on the head (slurm_client), and taking a dynamic
node out of Slurm, only if empty, for a scale-in: drain, look again, delete (slurm_release).
How a node joins Slurm (`[plugin.X] kind = "slurm"`) is a node command, beside the other plugin
kinds in controller.gridengine.node_plugins.
May import: controller.config, controller.messages, controller.runtime.
"""
