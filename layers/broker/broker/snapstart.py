"""SnapStart: what must not survive a restore (one snapshot can seed many environments)."""

from __future__ import annotations

from collections.abc import Callable


def after_restore(callback: Callable[[], None]) -> None:
    """Run ``callback`` after each SnapStart restore. The runtime runs these hooks; elsewhere
    (no ``snapshot_restore_py``) there is nothing to do."""
    try:
        from snapshot_restore_py import register_after_restore  # noqa: PLC0415 - SnapStart only
    except ImportError:
        return
    register_after_restore(callback)
