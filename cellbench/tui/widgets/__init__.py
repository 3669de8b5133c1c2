"""The TUI's widgets: one panel each, fed by a ``RunWatcher``."""
