"""The package's architecture stays as drawn: the import-linter contracts of pyproject.toml (layers pointing one
way, no cycles between the modules of a room) hold, and the package root holds only the entry points and the two
primitives every layer shares."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    executable = shutil.which("lint-imports")
    # import-linter is in the test extra the README's test command installs: missing, it is a broken install
    assert executable is not None, "import-linter is not installed: pip install -e '.[test]'"
    completed = subprocess.run([executable, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "0 broken" in completed.stdout


def test_the_package_root_holds_entry_points_and_shared_primitives_only():
    modules = sorted(path.name for path in (ROOT / "hf_ssl").glob("*.py"))
    assert modules == ["__init__.py", "cli.py", "distributed.py", "schedules.py"]
