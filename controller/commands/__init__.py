"""Sub-commands of the `controller` CLI, one module each, and their exit codes (exit_codes).

May import: controller.app (for `run`) and every domain package; never controller.cli.
"""
