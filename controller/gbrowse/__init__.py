"""GBrowse's side of the render farm: what the master serves and how it finds its slaves.

Owns: Apache's mod_status page (apache_status), renderfarm.conf (renderfarm), `import-conf` from
aws_balancer.conf (import_conf) and the render slaves' user data (userdata).
May import: controller.config, controller.messages.
"""
