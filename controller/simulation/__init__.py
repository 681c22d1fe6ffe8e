"""`controller simulate`: a load trace replayed against the simulated cloud, and its report.

Owns: traces (trace), the replay (replay), the fleet reconciler's executor on SimCloud
(fleet_executor), the oracle (oracle), the report and timeline (report), the elasticity measures
(elasticity, pure), the plots (plot) and the shipped trace (data/); for `simulate --cluster`,
batch job traces (job_trace), the Grid Engine model bench/cluster.py shares (queue_model), the
node pool's executor (node_executor), the replay (cluster_replay) and its report (cluster_report).
May import: controller.policy, controller.cloud, controller.gbrowse, controller.gridengine,
controller.config, controller.messages.
"""
