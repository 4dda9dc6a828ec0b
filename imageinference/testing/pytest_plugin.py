"""pytest plugin (loaded with `-p` from pyproject): the repository root is a ComfyUI custom-node folder.

Its __init__.py is ComfyUI's entry point and imports ComfyUI, so pytest must not treat the root as a package
(it would import that file before every test). Registered globally because conftest hooks never reach the root.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if (path / "__init__.py").is_file() and (path / "pyproject.toml").is_file():
        return pytest.Dir.from_parent(parent, path=path)
    return None
