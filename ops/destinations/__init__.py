"""Backup destinations behind one small interface; ``open_destination`` picks the kind."""

from dataclasses import replace

from ops.config import Destination as DestinationConfig
from ops.destinations.base import Destination, DestinationError, Staging
from ops.destinations.local import LocalDestination


def open_destination(cfg: DestinationConfig) -> Destination:
    if cfg.type == "local":
        return LocalDestination(cfg.name, cfg.path)
    if cfg.type == "s3":
        from ops.destinations.s3 import S3Destination

        return S3Destination(
            cfg.name,
            cfg.bucket,
            cfg.prefix,
            cfg.endpoint_url,
            cfg.region,
            cfg.storage_class,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            deadline=cfg.deadline,
            bandwidth=cfg.bandwidth,
            lock=(cfg.object_lock_mode, cfg.object_lock_retain.seconds) if cfg.object_lock_mode else None,
            sse=(cfg.sse, cfg.sse_kms_key_id) if cfg.sse else None,
        )
    raise ValueError(f"unknown destination type {cfg.type!r}")


# What a look (status) waits at most: an answer in seconds matters more there than patience.
HURRIED = {"connect_timeout": 3.0, "read_timeout": 5.0, "deadline": 10.0}


def hurried(cfg: DestinationConfig) -> DestinationConfig:
    """``cfg`` with its timeouts capped at HURRIED."""
    return replace(cfg, **{k: min(getattr(cfg, k), cap) for k, cap in HURRIED.items()})


__all__ = ["Destination", "DestinationError", "Staging", "hurried", "open_destination"]
