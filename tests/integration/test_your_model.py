"""A model of your own end to end: ``selfheal init`` on a generated multiclass table with text and
missing cells writes the config; a real daemon trains it with the user's pipeline factory from a
module beside the config and serves classes and probabilities; ``selfheal models import`` brings a
skops model in, and refuses a pickle unless told it may run code."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.model.registry import ModelRegistry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FACTORY = '''
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def build(schema):
    """One-hot categories, impute numbers, a logistic regression: a user's own pipeline."""
    categorical = [c.name for c in schema.columns if not c.is_numeric]
    numeric = [c.name for c in schema.columns if c.is_numeric]
    encode = make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="most_frequent"),
                       OneHotEncoder(handle_unknown="ignore")), categorical),
        (SimpleImputer(), numeric),
    )
    return make_pipeline(encode, LogisticRegression(max_iter=1000))
'''


def generated(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Three tiers from two numbers, a colour (text, some cells empty or "NA") and a flag."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 1, rows)
    x2 = rng.normal(0, 1, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    member = rng.choice(["yes", "no"], rows)
    score = x1 + 0.5 * x2 + np.where(colour == "red", 1.0, 0.0) + np.where(member == "yes", 0.5, 0)
    tier = np.where(score < -0.3, "low", np.where(score < 0.9, "mid", "high"))
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "x1": x1.round(4),
            "x2": x2.round(4),
            "colour": colour,
            "member": member,
            "tier": tier,
        }
    )
    frame.loc[rng.choice(rows, 150, replace=False), "colour"] = ""
    frame.loc[rng.choice(rows, 100, replace=False), "colour"] = "NA"
    frame.loc[rng.choice(rows, 80, replace=False), "x2"] = np.nan
    return frame


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfheal_daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


@pytest.fixture
def initialised(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The generated data and the config ``selfheal init`` wrote for it."""
    data = tmp_path / "tiers.csv"
    generated().to_csv(data, index=False)
    done = cli(
        "init", "--data", str(data), "--target", "tier", "--out", "config.toml", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "multiclass" in done.stdout
    written = tomllib.loads((tmp_path / "config.toml").read_text())
    assert written["model"]["task"] == "multiclass"
    assert "id" in written["model"]["ignore"]
    assert set(written["model"]["categorical"]) >= {"colour"}
    return data, written


def test_a_user_pipeline_factory_is_trained_and_served_by_a_real_daemon(
    start_daemon: Any, tmp_path: Path, initialised: tuple[Path, dict[str, Any]]
) -> None:
    """The factory in a module beside the config trains v1; /predict answers three classes."""
    data, written = initialised
    (tmp_path / "tierpipe.py").write_text(FACTORY)
    model = {**written["model"], "pipeline": "tierpipe:build"}
    daemon = start_daemon(
        model=model,
        training={"data": str(data)},
        gate={"golden_min_share": 0.6},
    )
    daemon.wait_serving(timeout=120)
    meta = ModelRegistry(daemon.state_dir / "registry").info("v1").meta
    assert meta["pipeline"] == "tierpipe:build"
    assert meta["schema"]["classes"] == ["high", "low", "mid"]
    row = {"x1": 0.2, "x2": None, "colour": "red", "member": "yes"}
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        answer = client.post("/predict", json={"instances": [row, {**row, "colour": "NA"}]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["classes"] == ["high", "low", "mid"]
        assert len(body["probabilities"]) == 2
        assert len(body["probabilities"][0]) == 3
        assert all(abs(sum(p) - 1) < 1e-6 for p in body["probabilities"])
        missing = client.post("/predict", json={"x1": 0.2, "colour": "red", "member": "yes"})
        assert missing.status_code == 422
        assert "x2" in missing.text


def test_models_import_takes_a_skops_file_and_refuses_a_pickle_unless_trusted(
    tmp_path: Path, initialised: tuple[Path, dict[str, Any]]
) -> None:
    """skops: registered and current; a pickle: refused naming the risk, then taken when trusted."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from skops.io import dump

    data, _ = initialised
    frame = pd.read_csv(data)
    features = ["x1", "x2"]
    model = HistGradientBoostingClassifier(max_iter=50).fit(frame[features], frame["tier"])
    dump(model, tmp_path / "tiers.skops")
    joblib.dump(model, tmp_path / "tiers.joblib")
    config = tmp_path / "config.toml"
    text = config.read_text()
    assert "\n[gate]" not in text
    config.write_text(text + "\n[gate]\ngolden_min_share = 0.5  # two of the four features\n")

    first = cli(
        "models",
        "import",
        "tiers.skops",
        "--data",
        str(data),
        "--config",
        "config.toml",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    registry = ModelRegistry(tmp_path / "var" / "registry")
    assert registry.alias("current") == "v1"
    meta = registry.info("v1").meta
    assert [f["name"] for f in meta["schema"]["features"]] == features
    assert "balanced_accuracy" in meta["metrics"]

    refused = cli(
        "models",
        "import",
        "tiers.joblib",
        "--data",
        str(data),
        "--config",
        "config.toml",
        cwd=tmp_path,
    )
    assert refused.returncode != 0
    assert "--trust-pickle" in refused.stderr
    assert "runs any code" in refused.stderr
    assert registry.versions() == ["v1"]

    trusted = cli(
        "models",
        "import",
        "tiers.joblib",
        "--data",
        str(data),
        "--config",
        "config.toml",
        "--trust-pickle",
        cwd=tmp_path,
    )
    assert trusted.returncode == 0, trusted.stderr
    assert registry.alias("current") == "v2"
    assert registry.info("v2").meta["gate"]["promote"] is True
