"""The docs site builds with warnings as errors, renders the state diagram and the API reference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    diagram = (site / "state-diagram" / "index.html").read_text()
    assert re.search(r'<pre class="mermaid"><code>stateDiagram-v2', diagram), "the diagram is not a mermaid block"
    migration = (site / "migration" / "index.html").read_text()
    assert migration.count('class="grid"') == 1 and "from transformers import" in migration
    api = (site / "api" / "trainer" / "index.html").read_text()
    assert 'id="statetrain.Trainer"' in api


def test_every_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", config, re.M))
    assert pages == listed, f"not in mkdocs.yml nav: {sorted(pages - listed)}; missing files: {sorted(listed - pages)}"
