"""The provider-neutral sync core: change pages, the cursor loop, the sink port, resync pages."""

from crmsync.sync.core import (
    ChangePage,
    ChangeSource,
    CursorExpired,
    CursorLoop,
    CursorStore,
    ImportPages,
    ImportSource,
    Outcome,
    Removal,
    Resume,
    Sink,
    SyncResult,
)

__all__ = [
    "ChangePage",
    "ChangeSource",
    "CursorExpired",
    "CursorLoop",
    "CursorStore",
    "ImportPages",
    "ImportSource",
    "Outcome",
    "Removal",
    "Resume",
    "Sink",
    "SyncResult",
]
