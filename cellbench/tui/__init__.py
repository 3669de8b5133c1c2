"""``cellbench tui``: a Textual app that reads run folders only (never torch, never the trainer).

``watch`` holds the incremental readers (pure Python); ``app`` the Textual app.
"""
