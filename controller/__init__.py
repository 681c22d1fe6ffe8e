"""Spot fleet controller: keeps EC2 spot render slaves and batch nodes sized to demand.

Layers, each importing only those below it (.importlinter keeps them): cli -> commands -> app ->
actors -> simulation -> policy | status -> cloud -> gbrowse | gridengine -> config -> runtime ->
messages. Each package's docstring says what it owns and what it may import.
"""
