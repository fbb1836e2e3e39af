"""Shared code of pacs-ai-node that never imports torch: settings, database, routing."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pacs-ai-node")
except PackageNotFoundError:
    __version__ = "0.0.0+unknown"
