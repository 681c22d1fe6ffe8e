"""Spot fleet controller: keeps EC2 spot render slaves and batch nodes sized to demand.

Layers, each importing only those below it (.importlinter keeps them): cli -> commands -> app ->
actors -> simulation -> policy | status -> cloud -> gbrowse | gridengine -> config -> runtime ->
messages. Each package's docstring says what it owns and what it may import.
"""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    """The installed distribution's version (pyproject.toml); a bare checkout says so."""
    try:
        return version("spot-controller")
    except PackageNotFoundError:
        return "0+unknown (not installed: pip install -e .)"


__version__ = _version()
