"""Sweeps: grids and multi-phase studies of ordinary runs, on a local process pool or Ray Tune.

space (values of each key) · spec (sweep files, phases) · trials (names, commands) · phases
(smoke → grid → seeds → final) · local (process pool) · ray_backend · store (the sweep folder) ·
leaderboard · runner (resume, skip, rank). See docs/sweep.md.
"""
