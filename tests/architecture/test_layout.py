"""The package's layout rules: layered imports, small folders, modules and functions, a narrow facade.

A rule broken here is a design decision to make in the open (change the rule and docs/architecture.md
together), not something to work around.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import statetrain

PACKAGE = Path(statetrain.__file__).parent
ROOT = PACKAGE.parent
MAX_MODULES_PER_FOLDER = 15
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
DOCUMENTED_ADDITIONS = {"on", "off", "plan", "run_context", "callback_handler"}
"""statetrain's public ``Trainer`` names beyond HF's (docs/events.md, docs/machine.md)."""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_linter_contracts_hold() -> None:
    """Subpackages import only the layers below them, type-only imports included (pyproject's contract)."""
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(ROOT)} has no docstring saying what the subpackage owns"
        assert "import" in doc.lower(), f"{init.relative_to(ROOT)} does not say what it may import"


def test_no_folder_holds_more_than_fifteen_modules() -> None:
    folders = {p.parent for p in _modules()}
    for folder in folders:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        assert count <= MAX_MODULES_PER_FOLDER, f"{folder.relative_to(ROOT)} holds {count} modules"


def test_modules_and_functions_stay_small() -> None:
    too_long: list[str] = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "over the size limits:\n" + "\n".join(too_long)


def test_trainer_public_names_are_hf_names_plus_documented_additions() -> None:
    import transformers  # the dev extra installs it: the comparison must run, not skip

    hf = {name for name in dir(transformers.Trainer) if not name.startswith("_")}
    ours = {name for name in dir(statetrain.Trainer) if not name.startswith("_")}
    extra = ours - hf - DOCUMENTED_ADDITIONS
    assert not extra, f"engine internals public on Trainer (prefix them with _ or move them): {sorted(extra)}"


def test_no_state_module_mentions_the_trainer_class() -> None:
    """States reach the trainer through ``run.trainer`` (the ``TrainerHooks`` protocol), never by class."""
    for path in sorted((PACKAGE / "states").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("statetrain.trainer"), f"{path.name} imports {node.module}"
