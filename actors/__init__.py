"""One actor per file; actors never import each other (see .importlinter)."""
