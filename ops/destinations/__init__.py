"""Backup destinations behind one small interface; ``open_destination`` picks the kind."""

from ops.config import Destination as DestinationConfig
from ops.destinations.base import Destination, DestinationError, Staging
from ops.destinations.local import LocalDestination


def open_destination(cfg: DestinationConfig) -> Destination:
    if cfg.type == "local":
        return LocalDestination(cfg.name, cfg.path)
    if cfg.type == "s3":
        from ops.destinations.s3 import S3Destination

        return S3Destination(cfg.name, cfg.bucket, cfg.prefix, cfg.endpoint_url, cfg.region, cfg.storage_class)
    raise ValueError(f"unknown destination type {cfg.type!r}")


__all__ = ["Destination", "DestinationError", "Staging", "open_destination"]
