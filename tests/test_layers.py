"""The packages are layered as pyproject.toml's import-linter contracts say (README, "Where things go"): a lower
layer never imports a higher one (function-level imports count), and models import no service."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

import cellfactory

PACKAGE = Path(cellfactory.__file__).resolve().parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"
CONTRACTS = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c["id"] for c in CONTRACTS])
def test_contract_is_kept(contract, capsys):
    result = lint_imports(config_filename=str(PYPROJECT), limit_to_contracts=(contract["id"],), no_cache=True)
    report = capsys.readouterr().out
    assert result == 0, f"Contract broken: {contract['name']}\n{report[report.find('Broken contracts'):]}"


def test_every_package_has_its_layer():
    """A new package (or top-level module) is placed in a layer, so the contract sees what it imports."""
    layered = {module.strip().removeprefix("cellfactory.")
               for contract in CONTRACTS if contract["type"] == "layers"
               for layer in contract["layers"] for module in layer.replace(":", "|").split("|")}
    present = {path.parent.name if path.name == "__init__.py" else path.stem
               for path in [*PACKAGE.glob("*/__init__.py"), *PACKAGE.glob("*.py")] if path.name != "__init__.py"
               or path.parent != PACKAGE}
    assert sorted(present - layered) == []
