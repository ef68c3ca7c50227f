"""The training example of the README and docs/environment.md runs, and is what training builds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _training_example(doc: str) -> str:
    text = (ROOT / doc).read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "learned_env" in b]
    assert len(blocks) == 1, f"{doc}: expected one training example"
    return blocks[0]


def test_readme_and_environment_doc_show_the_same_training_example() -> None:
    assert _training_example("README.md") == _training_example("docs/environment.md")


def test_the_training_example_runs_and_is_what_training_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.learner import make_env

    # SB3's learn() without a logger of ours makes a log folder: in the test's own, not /tmp/SB3-<date>
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))
    from training.rl_config import load_train_config, shipped_config

    code = _training_example("README.md").replace("total_timesteps=200_000", "total_timesteps=64")
    code = code.replace(
        'PPO("MlpPolicy", env, verbose=1)', 'PPO("MlpPolicy", env, verbose=0, n_steps=64, batch_size=64)'
    )
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    example, trained = scope["env"], make_env(load_train_config(shipped_config("peak_shaving")))
    obs_a, _ = example.reset(seed=0)  # type: ignore[attr-defined]
    obs_b, _ = trained.reset(seed=0)
    np.testing.assert_array_equal(obs_a, obs_b)
    action = np.array([0.5], dtype=np.float32)
    step_a, step_b = example.step(action), trained.step(action)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(step_a[0], step_b[0])
    assert step_a[1] == step_b[1]
