"""Backup destinations behind one small interface; ``open_destination`` picks the kind."""

from ops.config import Destination as DestinationConfig
from ops.destinations.base import Destination, DestinationError, Staging
from ops.destinations.local import LocalDestination


def open_destination(cfg: DestinationConfig) -> Destination:
    if cfg.type == "local":
        return LocalDestination(cfg.name, cfg.path)
    raise ValueError(f"unknown destination type {cfg.type!r}")


__all__ = ["Destination", "DestinationError", "Staging", "open_destination"]
