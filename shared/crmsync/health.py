"""Liveness: answers without touching any dependency."""

from __future__ import annotations

import os

from crmsync import __version__


def status() -> dict[str, str]:
    return {
        "status": "ok",
        "service": "crmsync",
        "version": __version__,
        "stage": os.environ.get("STAGE", "dev"),
    }
