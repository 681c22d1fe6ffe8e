"""The user data a slave boots with: start GBrowse's render slave on each configured port.

GBrowse's own balancer booted its slave AMI with `gbrowse-slave start <ports>`, and that init
script runs one `gbrowse_slave` daemon per port as the web user, logging to
/var/log/gbrowse/gbrowse_slave with a pid file per port. This script does the same directly, so it
works on any image that has `gbrowse_slave` installed, whatever its init system. The controller
lists a slave in renderfarm.conf only once `http://<ip>:<port>/` answers 403 on every port, so the
script needs no readiness signal of its own.

`extra` ([slave] user_data) runs first, as root, e.g. to mount data volumes the slave reads.
"""

from __future__ import annotations

from collections.abc import Sequence

TEMPLATE = """\
#!/bin/bash
# Written by the spot controller: start GBrowse's render slave (gbrowse_slave) on each port.

PORTS="{ports}"
SLAVE_USER="${{SLAVE_USER:-www-data}}"
RUNDIR="${{GBROWSE_RUNDIR:-/var/run/gbrowse}}"
LOGDIR="${{GBROWSE_LOGDIR:-/var/log/gbrowse}}"
PRELOAD_CONF=/etc/gbrowse2/slave_preload.conf

# from here: the config's [slave] user_data
{extra}
# up to here: the config's [slave] user_data

DAEMON="$(command -v gbrowse_slave || true)"
for candidate in /usr/local/bin/gbrowse_slave /usr/bin/gbrowse_slave \\
        /opt/gbrowse/bin/gbrowse_slave; do
    [ -z "$DAEMON" ] && [ -x "$candidate" ] && DAEMON="$candidate"
done
if [ -z "$DAEMON" ]; then
    echo "gbrowse_slave not found: install GBrowse's slave (./Build install_slave) in the image" >&2
    exit 1
fi
id "$SLAVE_USER" >/dev/null 2>&1 || SLAVE_USER=root
mkdir -p "$RUNDIR" "$LOGDIR"
chown "$SLAVE_USER" "$RUNDIR" "$LOGDIR"
PRELOAD=""
[ -r "$PRELOAD_CONF" ] && PRELOAD="--preload $PRELOAD_CONF"

# gbrowse_slave detaches itself once it listens (it writes the pid file).
for port in $PORTS; do
    command="$DAEMON --port $port --verbose 1 --log $LOGDIR/gbrowse_slave"
    command="$command --pid $RUNDIR/gbrowse-slave.$port.pid $PRELOAD"
    if [ "$(id -un)" = "$SLAVE_USER" ]; then
        sh -c "$command"
    else
        su "$SLAVE_USER" -s /bin/sh -c "$command"
    fi
done
"""


def render_slave_user_data(ports: Sequence[int], extra: str = "") -> str:
    """A bash script (EC2 user data) that starts one render slave per port after `extra`."""
    if not ports:
        raise ValueError("a render slave needs at least one port")
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"not a TCP port: {port!r}")
    return TEMPLATE.format(
        ports=" ".join(str(p) for p in ports),
        extra=extra.strip() or ":",
    )
