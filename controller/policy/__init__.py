"""Decisions, as pure functions of what was observed: how many instances, which ones go.

Owns: the load-table band and its dwell (band), the forecasting policy, its tuning values and its
error books (forecasting, forecast_settings, error_book, surge_forecast), the baselines GBrowse
and StarCluster behaved as (baselines, starcluster_queue), the batch queue's policy
(queue_policy, with queue_demand: what its pending jobs ask of new nodes), the policies by
name (factory), an instance's phases (lifecycle), what differs
between the two pools (pool_profile) and the fleet reconciler that turns an observed fleet, a
decision and the time into cloud calls (reconciler, fleet_plans, fleet_views, launch_plans,
retire_plans, refresh_plans, release_plans).
Pure: no I/O library, no asyncio, subprocess or socket; time comes in with each snapshot.
May import: controller.config, controller.messages, controller.cloud.port, the pure modules of
controller.gbrowse and controller.gridengine (user data, host names, volume order).
"""
