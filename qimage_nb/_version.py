"""The package's version, in a module of its own: the client's User-Agent reads it without importing
the package's ``__init__`` (whose lazy names reach every module: an import cycle)."""

__version__ = "0.1.0"
