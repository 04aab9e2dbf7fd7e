"""`geotiler --help` stays instant: it imports neither torch nor cv2.

Run in a fresh interpreter, since the test session itself has imported everything.
"""

from __future__ import annotations

import subprocess
import sys

HELP_IMPORTS = """
import sys
from click.testing import CliRunner
from geotiler.cli import main
for args in (["--help"], *([name, "--help"] for name in main.commands)):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output, result.stderr)
heavy = [m for m in ("torch", "cv2") if m in sys.modules]
print(" ".join(heavy))
"""


def test_help_imports_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"--help imported {done.stdout.strip()}"


def test_console_script_module_runs():
    done = subprocess.run([sys.executable, "-m", "geotiler", "--version"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "geotiler" in done.stdout
