"""The README stays what an operator reads in one sitting, and its links lead somewhere."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_is_at_most_25000_bytes():
    assert len(README.read_bytes()) <= 25_000


def test_every_relative_link_of_the_readme_names_a_file_that_exists():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text()):
        assert (README.parent / target).exists(), target
