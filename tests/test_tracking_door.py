"""MLflow calls of training go through one tracking module (issue 12, item 5).

Inside ``training/`` only :mod:`training.tracking` (runs, experiments, registration, evaluation logging) and
the pyfunc wrapper :mod:`training.mlflow_model` import mlflow; every other module logs through
``training.tracking``. Like the package rules, the check walks every import statement, function bodies
included.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_import_rules import ROOT, Import, imports_of

MLFLOW_DOORS = frozenset({"training/tracking.py", "training/mlflow_model.py"})


def mlflow_imports_outside_the_door(root: Path = ROOT) -> list[Import]:
    """Imports of mlflow in ``training/`` outside :data:`MLFLOW_DOORS`."""
    out: list[Import] = []
    for path in sorted((root / "training").rglob("*.py")):
        if path.relative_to(root).as_posix() in MLFLOW_DOORS:
            continue
        out.extend(imp for imp in imports_of(path, root) if imp.module.split(".")[0] == "mlflow")
    return out


def test_only_the_tracking_module_imports_mlflow_in_training() -> None:
    found = mlflow_imports_outside_the_door()
    assert not found, "mlflow imported outside training/tracking.py:\n" + "\n".join(
        f"  {imp.path}:{imp.line} imports {imp.module}" for imp in found
    )


def test_the_doors_do_import_mlflow() -> None:
    """The allowed modules exist and are where mlflow is imported (else the rule guards nothing)."""
    for rel in MLFLOW_DOORS:
        assert any(imp.module.split(".")[0] == "mlflow" for imp in imports_of(ROOT / rel)), rel


def test_a_lazy_mlflow_import_elsewhere_is_found(tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "tracking.py").write_text("import mlflow\n")
    (tmp_path / "training" / "train.py").write_text(
        "def train():\n    from mlflow.tracking import MlflowClient\n    return MlflowClient\n"
    )
    found = mlflow_imports_outside_the_door(tmp_path)
    assert [(imp.path, imp.line, imp.module) for imp in found] == [
        ("training/train.py", 2, "mlflow.tracking")
    ]
