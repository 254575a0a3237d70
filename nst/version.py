"""The package's version, in a module of its own: the package, pyproject.toml and the modules that
record it (checkpoint, provenance) read it from here, so no import runs back up to the package."""

__version__ = "0.12.0"
