"""Training any task: the built-in pipeline on mixed columns, classifiers learning their labels,
and a user's pipeline factory, refused with the reason when it cannot give a working model."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.config import TrainingConfig
from selfheal_daemon.errors import TrainingError
from selfheal_daemon.model.schema import UNSEEN, Column, Schema
from selfheal_daemon.model.training import build_pipeline, train

FAST = TrainingConfig(max_iter=20, reference_rows=200)


def mixed(task: str = "binary", rows: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, Schema]:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows).astype(float)
    city = rng.choice(["north", "south", "east"], rows)
    score = (age - 45) / 15 + np.where(city == "north", 1.2, -0.4) + rng.normal(0, 0.5, rows)
    if task == "binary":
        target = np.where(score > 0, "yes", "no")
        classes: tuple[str, ...] = ("no", "yes")
    elif task == "multiclass":
        target = np.where(score < -0.5, "a", np.where(score < 0.7, "b", "c"))
        classes = ("a", "b", "c")
    else:
        target = score
        classes = ()
    frame = pd.DataFrame({"age": age, "city": city, "y": target})
    frame.loc[rng.choice(rows, 60, replace=False), "city"] = np.nan
    schema = Schema(
        name="m",
        task=task,  # type: ignore[arg-type]
        target="y",
        columns=(
            Column("age", "numeric", low=18, high=79),
            Column("city", "categorical", categories=("east", "north", "south"), missing=True),
        ),
        classes=classes,
        metric="roc_auc" if task == "binary" else ("balanced_accuracy" if classes else "r2"),
    )
    return frame, schema


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_the_built_in_pipeline_learns_each_task_on_mixed_columns(task: str) -> None:
    """Numbers and categories with gaps train; the metrics are the task's; importance sums to 1."""
    frame, schema = mixed(task)
    result = train(frame, FAST, schema=schema)
    if task == "regression":
        assert result.metrics["r2"] > 0.5
    else:
        assert result.metrics["balanced_accuracy"] > 0.7
        assert list(result.model.classes_) == list(schema.classes)
    assert result.importance.sum() == pytest.approx(1.0)
    assert result.reference.shape[1] == 2
    assert result.reference_predictions is not None


def test_an_unseen_category_at_serving_time_never_raises() -> None:
    """A category training never saw (encoded UNSEEN) is answered like a missing one."""
    frame, schema = mixed("binary")
    model = train(frame, FAST, schema=schema).model
    rows = np.array([[40.0, UNSEEN], [40.0, np.nan]])
    proba = schema.predict_proba(model, rows)
    assert np.allclose(proba[0], proba[1])


def test_the_all_numeric_pipeline_is_the_bundled_models() -> None:
    """Without categorical columns the built-in pipeline imputes the median, then boosts trees."""
    steps = [name for name, _ in build_pipeline(FAST, Schema.california()).steps]
    assert steps == ["impute", "regressor"]


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("userpipe")]:
        del sys.modules[name]


def write(where: Path, name: str, body: str) -> None:
    (where / f"{name}.py").write_text(textwrap.dedent(body))


def test_a_user_factory_gets_the_schema_and_its_model_is_trained(user_module: Path) -> None:
    """The factory's estimator is fitted on the decoded frame and measured like any model."""
    write(
        user_module,
        "userpipe_ok",
        """
        from sklearn.compose import make_column_transformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        SEEN = []

        def build(schema):
            SEEN.append(schema.features)
            cats = [c.name for c in schema.columns if not c.is_numeric]
            nums = [c.name for c in schema.columns if c.is_numeric]
            return make_pipeline(
                make_column_transformer(
                    (make_pipeline(SimpleImputer(strategy="most_frequent"),
                                   OneHotEncoder(handle_unknown="ignore")), cats),
                    ("passthrough", nums),
                ),
                LogisticRegression(),
            )
        """,
    )
    frame, schema = mixed("binary")
    result = train(frame, FAST, schema=schema, factory="userpipe_ok:build")
    assert sys.modules["userpipe_ok"].SEEN == [("age", "city")]
    assert result.metrics["balanced_accuracy"] > 0.7


@pytest.mark.parametrize(
    ("body", "factory", "reason"),
    [
        ("", "userpipe_none:nowhere", "has no function nowhere"),
        ("def build(schema):\n    return 42\n", "userpipe_int:build", "not an estimator"),
        ("def build(schema):\n    raise ValueError('no')\n", "userpipe_raise:build", "raised"),
        ("import not_a_module_anywhere\n", "userpipe_import:build", "cannot import"),
        (
            "from sklearn.linear_model import LinearRegression\n"
            "def build(schema):\n    return LinearRegression()\n",
            "userpipe_text:build",
            "failed to fit",
        ),
    ],
)
def test_a_broken_factory_is_refused_with_the_reason(
    user_module: Path, body: str, factory: str, reason: str
) -> None:
    """A factory that cannot be imported, returns no estimator, raises, or cannot fit is refused."""
    write(user_module, factory.partition(":")[0], body)
    frame, schema = mixed("binary" if "text" not in factory else "regression")
    with pytest.raises(TrainingError, match=reason):
        train(frame, FAST, schema=schema, factory=factory)
