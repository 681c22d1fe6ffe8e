"""`controller simulate`: a load trace replayed against the simulated cloud, and its report.

Owns: traces (trace), the replay (replay), the fleet reconciler's executor on SimCloud
(fleet_executor), the oracle (oracle), the report and timeline (report), the elasticity measures
(elasticity, pure), the plots (plot) and the shipped trace (data/).
May import: controller.policy, controller.cloud, controller.config, controller.messages.
"""
