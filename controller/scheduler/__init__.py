"""Which scheduler drives a batch cluster, Grid Engine or Slurm, picked from its plugins.

Owns: the shape the actors drive either scheduler through, and choosing it: the queue as a load
source (source: controller.gridengine.sge_source or controller.slurm.slurm_source) and the head's
part for a node joining and leaving (side: controller.gridengine.sge_side or
controller.slurm.slurm_side).
May import: controller.gridengine, controller.slurm, controller.config, controller.messages,
controller.runtime.
"""
