"""Docs stay true: every Python example runs, and the diagram page equals the code's diagram."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from statetrain.cli import main as cli_main
from statetrain.engine.default_machine import default_machine
from tests.callbacks.reporting.runs import set_offline_trackers

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


PAGES_WITH_CODE = [p for p in DOCS if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_offline_trackers(tmp_path, monkeypatch)  # the reporting examples' trackers stay offline
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for index, block in enumerate(python_blocks(page)):
            code = compile(block, f"{page.name}[block {index}]", "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)
    finally:
        os.chdir(cwd)


def test_diagram_page_matches_the_code() -> None:
    page = (ROOT / "docs" / "state-diagram.md").read_text(encoding="utf-8")
    pattern = r"<!-- BEGIN GENERATED DIAGRAM -->\n```mermaid\n(.*?)```\n<!-- END GENERATED DIAGRAM -->"
    match = re.search(pattern, page, re.S)
    assert match, "the generated diagram markers are missing from docs/state-diagram.md"
    assert match.group(1) == default_machine().to_mermaid(), (
        "docs/state-diagram.md is stale: regenerate it with `statetrain diagram`"
    )


def test_cli_diagram_prints_the_default_machine() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["diagram"]) == 0
    assert out.getvalue() == default_machine().to_mermaid()


def test_cli_diagram_loads_a_machine_by_import_path() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["diagram", "statetrain.engine.default_machine:default_machine"]) == 0
    assert "epoch_end" in out.getvalue()
    with pytest.raises(SystemExit, match="cannot load machine"):
        cli_main(["diagram", "statetrain.nowhere:nothing"])


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.findall(r"^```[^\n]*\n(.*?)^```", readme, flags=re.S | re.M)[0]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 2, "README's first block must hold the demo command and the test command"
    assert any("statetrain demo" in ln for ln in lines)
    test_line = next(ln for ln in lines if "pytest" in ln)
    assert test_line.startswith("pip install torch==2.13.0")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "README.md" in ci and 'bash -c "${test_command}"' in ci


def test_machine_page_table_lists_each_state_and_the_events_it_fires() -> None:
    page = (ROOT / "docs" / "machine.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", page, re.M)
    documented = {name: set(re.findall(r"`(on_\w+)`", events)) for name, events in rows}
    machine = default_machine()
    assert documented == {name: {event.value for event in state.fires} for name, state in machine.states.items()}


def test_readme_links_the_cli_guide_and_its_config_example_validates(tmp_path: Path) -> None:
    from statetrain.cli.config import load_config
    from statetrain.cli.config.build import build_args

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/cli.md)" in readme
    block = re.search(r"^```yaml\n(.*?)^```", readme, re.S | re.M)
    assert block, "README has no config example"
    path = tmp_path / "readme.yaml"
    path.write_text(block.group(1), encoding="utf-8")
    config, source = load_config(path)
    build_args(config, source)
