"""Puts the repository root on sys.path so ``python scripts/<step>.py`` finds ``ops``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
