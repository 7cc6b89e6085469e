"""Shared fixtures: a sandbox with real files, a config, and the real scripts as processes."""

import pytest

# The Sandbox lives in tools/sandbox.py, where the fault campaign uses it too.
from tools.sandbox import Sandbox

# Helper modules that hold fixtures and asserts: rewritten like test modules.
pytest.register_assert_rewrite("s3_support")


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)
