"""Suite-wide settings: a wide, colourless terminal so Rich output is stable to assert on."""

import os
import tempfile

os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# the sha256 cache of weights files (cellbench.digest_cache): never the user's own
os.environ.setdefault("CELLBENCH_CACHE_DIR", tempfile.mkdtemp(prefix="cellbench-test-cache-"))
# no test reads or edits the checkout's own cellbench.yaml by accident: a test of workspaces
# removes this (tests/workspace), every other one sees today's ./runs, ./data behaviour
os.environ.setdefault("CELLBENCH_WORKSPACE", "none")

# fixtures of the feature tests (tests/features, tests/cli/test_features.py, tests/engine) and
# of the workspace tests (tests/workspace, tests/cli/test_workspace*.py)
pytest_plugins = ["tests.helpers_features", "tests.helpers_workspace"]
