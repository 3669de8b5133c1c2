"""pyproject.toml declares what is tested: the Python versions CI runs (3.11 only; the code uses
``datetime.UTC``, new in 3.11) and no upper bound that would block a user with a newer torch."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def test_requires_python_is_the_tested_interpreter_and_tools_agree():
    data = _project()
    required = SpecifierSet(data["project"]["requires-python"])
    assert "3.11" in required and "3.10" not in required  # 3.10 has no datetime.UTC
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in required
    assert data["tool"]["ruff"]["target-version"] == "py311"
    assert "Programming Language :: Python :: 3.11" in data["project"]["classifiers"]


def test_torch_and_torchvision_have_no_upper_bound():
    deps = {Requirement(d).name: Requirement(d) for d in _project()["project"]["dependencies"]}
    for name in ("torch", "torchvision"):
        ops = {spec.operator for spec in deps[name].specifier}
        assert ops and ops <= {">=", ">"}, f"{name}: {deps[name].specifier}"
        assert "99.0" in deps[name].specifier  # a future release installs


def test_opencv_is_a_dev_dependency_for_the_parity_tests():
    dev = [Requirement(d).name for d in _project()["project"]["optional-dependencies"]["dev"]]
    assert "opencv-python-headless" in dev
