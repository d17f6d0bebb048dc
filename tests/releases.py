"""A copy of this source tree as the next release, for the installer's upgrade tests."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE_FILES = ("pyproject.toml", "README.md", "config.toml", "selfheal_daemon", "service",
                 "systemd", "deploy")  # fmt: skip


def release(directory: Path, version: str) -> Path:
    """This tree as release ``version`` under ``directory``: what deploy/install.sh needs, its
    version set in pyproject.toml (the package reads it from the installed metadata), and a line
    added to its unit so that the installed unit shows which release it came from."""
    tree = directory / f"release-{version}"
    tree.mkdir()
    for name in RELEASE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    (tree / "docs").mkdir()
    shutil.copy2(ROOT / "docs" / "OPERATIONS.md", tree / "docs")
    unit = tree / "systemd" / "selfheal.service"
    unit.write_text(unit.read_text() + f"# release {version}\n")
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    assert '\nversion = "' in text
    pyproject.write_text(
        "\n".join(
            f'version = "{version}"' if line.startswith("version = ") else line
            for line in text.splitlines()
        )
        + "\n"
    )
    return tree
