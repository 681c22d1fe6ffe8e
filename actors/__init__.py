"""One actor per file, named after it: observe -> plan -> execute, one outside thing each.

Actors never import each other (see .importlinter); they talk through controller.messages on the
Bus. May import: controller.runtime, controller.messages and the domain packages (config, policy,
cloud, gbrowse, gridengine, status); never controller.app, controller.commands or controller.cli.
"""
