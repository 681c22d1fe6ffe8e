"""The cloud: the Cloud port and everything behind it.

Owns: the port (port: the protocol and its values), the EC2 adapter (ec2cloud, ec2_groups,
ec2_shapes, ec2errors, credentials; aiobotocore), the SQS clients for the interruption queue
(sqs), the simulated cloud (sim_records, sim_fleet, simcloud), the fleet teardown (teardown),
the IAM policy (iam), the master's instance metadata (instance_metadata), its address
(master_address) and the [slave] keys it fills when left blank (master_defaults), EventBridge's
interruption events (interruption_events), the security group's rules (firewall_rules), and
`sync-data`'s staging instance (sync_plan and staging_shell: pure; staging, staging_ssh,
staging_leftovers, sync_run).
May import: controller.config, controller.messages, controller.runtime (backoff),
controller.gridengine (the order of a cluster's volumes); never controller.policy or actors.
"""
