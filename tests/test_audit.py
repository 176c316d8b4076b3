"""``actioncage audit``: the battery against the live configuration, and a failing attempt."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actioncage.audit.battery import CATALOGUE, Attack, print_table, run_battery
from tests.conftest import IMAGE, SESSION, TEST_LABEL, make_settings, sandbox_subject

pytestmark = [pytest.mark.docker, sandbox_subject]


def test_audit_command_passes_and_prints_the_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONCAGE_")}
    env.update(
        ACTIONCAGE_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        ACTIONCAGE_CONTAINER_LABELS=f"{TEST_LABEL}={SESSION}",
        ACTIONCAGE_SANDBOX_IMAGE=IMAGE,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "actioncage.cli", "audit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "isolation tier: container"  # the operator's default
    assert lines[1].split() == ["attempt", "category", "expected", "observed", "result"]
    assert f"{len(CATALOGUE)}/{len(CATALOGUE)} attempts contained" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_an_attempt_that_gets_through_fails_the_audit(tmp_path: Path) -> None:
    # An attempt whose script "gets through" must show as FAIL and fail the verdict.
    leaky = Attack(
        "reads_a_file_it_should_not",
        "test",
        "ok []",
        "def execute_action(context):\n    return ['/etc/hostname read']\n",
        lambda o: o.status == "ok" and o.output == [],
    )
    fine = next(a for a in CATALOGUE if a.name == "os_exit")
    results = run_battery(make_settings(tmp_path), (fine, leaky))
    assert [r.passed for r in results] == [True, False]
    out = io.StringIO()
    print_table(results, out)
    assert "FAIL" in out.getvalue() and "1/2 attempts contained; 1 FAILED" in out.getvalue()
