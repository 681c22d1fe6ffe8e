"""SSH host keys of cluster nodes, pinned per instance on first use.

A node's host key is made at its first boot, so no one can know it beforehand (StarCluster simply
switched checking off). The controller trusts the key a node shows at the first connection to that
instance and pins it, with the instance id, in a file in OpenSSH known_hosts format
(`PATTERN KEYTYPE BASE64 INSTANCE_ID`, the id in the comment field). From then on a different key
for the same instance is refused: a man in the middle must be there at the very first connection,
from inside the VPC. When an address comes back on another instance (EC2 reuses private
addresses), the old pin is dropped and the new instance is trusted on its first use; a pin is also
dropped when its instance has left Grid Engine. A pin is made before the node is registered, so
the file also says which hosts this controller may have put in Grid Engine: after a restart,
ClusterNodeSetup takes out those whose instance is gone.

The file is small and rewritten atomically (write, fsync, rename) on every change; the event loop
is single-threaded and the methods never await, so concurrent setups cannot interleave a change.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PinnedKey:
    pattern: str  # "10.0.1.23" on port 22, else "[10.0.1.23]:2222"
    key: str  # "ssh-ed25519 AAAA..."
    instance_id: str

    @property
    def line(self) -> str:
        return f"{self.pattern} {self.key} {self.instance_id}"


def host_pattern(address: str, port: int) -> str:
    """How OpenSSH's known_hosts names a host on a port."""
    return address if port == 22 else f"[{address}]:{port}"


def pattern_address(pattern: str) -> str:
    """The address in a host_pattern: `[10.0.1.23]:2222` and `10.0.1.23` give 10.0.1.23."""
    return pattern[1:].partition("]")[0] if pattern.startswith("[") else pattern


class HostKeyStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def get(self, pattern: str) -> PinnedKey | None:
        return next((p for p in self._read() if p.pattern == pattern), None)

    def pins(self) -> list[PinnedKey]:
        return self._read()

    def pin(self, pattern: str, key: str, instance_id: str) -> None:
        """Pin `key` ("TYPE BASE64") for `pattern`, replacing what was pinned for it."""
        kept = [p for p in self._read() if p.pattern != pattern]
        self._write([*kept, PinnedKey(pattern, " ".join(key.split()[:2]), instance_id)])

    def forget(self, pattern: str) -> None:
        pins = self._read()
        kept = [p for p in pins if p.pattern != pattern]
        if len(kept) != len(pins):
            self._write(kept)

    def _read(self) -> list[PinnedKey]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        pins = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 4 and not line.startswith("#"):
                pins.append(PinnedKey(parts[0], f"{parts[1]} {parts[2]}", parts[3]))
        return pins

    def _write(self, pins: list[PinnedKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".known_hosts-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(p.line + "\n" for p in pins))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
