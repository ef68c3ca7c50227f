"""Ray Tune search over a training config: the search space, and (opt-in, it starts Ray) a tiny search.

The search runs on the session's one local Ray (``local_ray`` in ``conftest.py``) and trains the smoke
config's trials: about a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.rl_config import Distribution, load_train_config, shipped_config


def test_search_space_translates_every_distribution() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    from training.tune import search_space

    space = search_space(
        {
            "algorithm.learning_rate": Distribution(kind="loguniform", low=1e-4, high=1e-3),
            "algorithm.log_std_init": Distribution(kind="uniform", low=-2.0, high=-1.0),
            "algorithm.n_epochs": Distribution(kind="randint", low=2, high=6),
            "env.residual_scale": Distribution(kind="choice", values=(0.25, 0.5)),
        }
    )
    lr = space["algorithm.learning_rate"]
    assert isinstance(lr, Float) and lr.lower == pytest.approx(1e-4) and lr.upper == pytest.approx(1e-3)
    assert isinstance(space["algorithm.log_std_init"], Float)
    assert isinstance(space["algorithm.n_epochs"], Integer)
    choice = space["env.residual_scale"]
    assert isinstance(choice, Categorical) and list(choice.categories) == [0.25, 0.5]


def test_shipped_search_spaces_name_real_fields() -> None:
    for name in ("peak_shaving", "v2g", "smoke"):
        cfg = load_train_config(shipped_config(name))
        for key, dist in cfg.tune.search_space.items():
            value = dist.values[0] if dist.values else dist.low
            assert cfg.with_overrides({key: value}) is not None


def test_bad_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="low < high"):
        Distribution(kind="uniform", low=1.0, high=0.5)
    with pytest.raises(ValueError, match="values"):
        Distribution(kind="choice")


@pytest.mark.usefixtures("local_ray")
def test_tiny_search_registers_the_best_trial(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from training.tune import tune_config

    cfg = load_train_config(shipped_config("smoke")).with_overrides(
        {"evaluation.at_start": False, "tracking.log_plots": False, "training.checkpoint_every_steps": None}
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = tune_config(cfg, tracking_uri=uri, out_dir=tmp_path / "tune", num_cpus=2)
    assert len(result.trials) == cfg.tune.num_samples
    assert result.registered_model_uri == "models:/evdlm-smoke/1"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("evdlm-smoke")
    assert experiment is not None
    children = client.search_runs(
        [experiment.experiment_id],
        f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert len(children) == cfg.tune.num_samples
