"""Sub-commands of the `controller` CLI, one module each."""
