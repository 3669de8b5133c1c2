"""Run store: run folders, ids, locks, the event stream and run summaries."""

from cellbench.runs.events import EventWriter, follow_events, read_events
from cellbench.runs.layout import RunPaths
from cellbench.runs.lock import RunLock
from cellbench.runs.store import RunStore, default_runs_root

__all__ = [
    "EventWriter",
    "RunLock",
    "RunPaths",
    "RunStore",
    "default_runs_root",
    "follow_events",
    "read_events",
]
