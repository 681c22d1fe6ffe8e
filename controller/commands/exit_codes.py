"""The exit codes of every sub-command (../shared/SPEC.md): what a script calling `controller`
can rely on."""

EXIT_OK = 0
EXIT_UNREACHABLE = 1  # status: the endpoint cannot be read
EXIT_LEFT = 1  # teardown: something of the fleet is left
EXIT_BAD_INPUT = 2  # a config, file or argument that cannot be used
