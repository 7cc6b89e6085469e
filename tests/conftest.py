"""Shared fixtures: a sandbox with real files, a config, and the real scripts as processes."""

import pytest

# The Sandbox lives in tools/sandbox.py, where the fault campaign uses it too; tests import
# these names from conftest.
from tools.sandbox import DAY, REPO, SCRIPTS, Sandbox  # noqa: F401


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)
