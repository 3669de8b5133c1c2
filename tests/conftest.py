"""Suite-wide settings: a wide, colourless terminal so Rich output is stable to assert on."""

import os
import tempfile

os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# the sha256 cache of weights files (cellbench.digest_cache): never the user's own
os.environ.setdefault("CELLBENCH_CACHE_DIR", tempfile.mkdtemp(prefix="cellbench-test-cache-"))

# fixtures of the feature tests (tests/features, tests/cli/test_features.py, tests/engine)
pytest_plugins = ["tests.helpers_features"]
