"""The Agent Training Service: a gRPC server that trains, evaluates and adapts agents."""

from importlib import metadata

try:
    __version__ = metadata.version("agent-training")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
