"""Reading a user's table and inferring its schema: each kind, each refusal, the Adult data."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.config import ModelConfig
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.infer import (
    Inference,
    clean_frame,
    format_schema,
    infer_schema,
    read_table,
)
from selfheal_daemon.model.schema import DEFAULT_MISSING, Schema

ADULT = Path("/work/shared/data/adult/adult.data")
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]  # fmt: skip
N = 200
rng = np.random.default_rng(7)


def _frame(**columns: Any) -> pd.DataFrame:
    """N rows: a numeric feature ``x``, a binary text target ``y``, and ``columns``."""
    base = {
        "x": np.round(rng.normal(size=N), 3),
        "y": rng.choice(["no", "yes"], size=N),
    }
    return pd.DataFrame({**base, **columns})


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _infer(tmp_path: Path, frame: pd.DataFrame, **spec: Any) -> Inference:
    """Write ``frame`` as CSV, read it back as a user's file is read, and infer its schema."""
    config = ModelConfig(**{"target": "y", **spec})
    return infer_schema(read_table(_csv(tmp_path, frame), config.missing_values), config)


def _cycle(values: list[Any]) -> list[Any]:
    return [values[i % len(values)] for i in range(N)]


# ----- the kind of each column ---------------------------------------------------------------

KIND_CASES: list[tuple[str, Callable[[], list[Any]], dict[str, Any], str, str]] = [
    ("floats", lambda: list(rng.normal(50, 10, N).round(2)), {}, "numeric", "distinct values in ["),
    ("few integers", lambda: _cycle([1, 2, 3, 4]), {}, "numeric", "whole numbers, few values"),
    ("zero/one integers", lambda: _cycle([0, 1]), {}, "numeric", "2 distinct values in [0, 1]"),
    ("text", lambda: _cycle(["red", "green", "blue"]), {}, "categorical", "3 categories"),
    ("padded text", lambda: _cycle([" red", "red ", "blue"]), {}, "categorical", "2 categories"),
    ("yes/no", lambda: _cycle(["yes", "no", "No"]), {}, "boolean", "boolean: no/yes"),
    ("true/false", lambda: _cycle(["true", "false"]), {}, "boolean", "boolean: false/true"),
    (
        "forced categorical",
        lambda: _cycle([10, 20, 30]),
        {"categorical": ["c"]},
        "categorical",
        "3 categories (listed in categorical)",
    ),
    ("constant", lambda: ["k"] * N, {}, "ignored", "ignored: constant (every value is 'k')"),
    ("constant number", lambda: [3] * N, {}, "ignored", "ignored: constant"),
    ("row numbers", lambda: list(range(1000, 1000 + N)), {}, "ignored", "an id (every value"),
    ("all missing", lambda: ["?"] * N, {}, "ignored", "ignored: all missing"),
    ("all empty", lambda: [""] * N, {}, "ignored", "ignored: all missing"),
    (
        "varied text",
        lambda: [f"t{i * 2 // 3}" for i in range(N)],
        {},
        "ignored",
        "ignored: too many distinct text values (133 of 200)",
    ),
    ("distinct text", lambda: [f"user-{i}" for i in range(N)], {}, "ignored", "an id (every"),
    ("listed in ignore", lambda: _cycle(["a", "b"]), {"ignore": ["c"]}, "ignored", "listed in"),
    (
        "numbers with a typo",
        lambda: [*map(str, rng.normal(size=N - 1).round(3)), "12,5"],
        {},
        "numeric",
        "(1 cells not numbers, e.g. '12,5', read as missing)",
    ),
]


@pytest.mark.parametrize(
    ("values", "spec", "kind", "reason"),
    [case[1:] for case in KIND_CASES],
    ids=[case[0] for case in KIND_CASES],
)
def test_each_column_gets_a_kind_and_a_reason(
    tmp_path: Path, values: Callable[[], list[Any]], spec: dict[str, Any], kind: str, reason: str
) -> None:
    """Column ``c`` is decided as the table says, with a reason a person can read."""
    inference = _infer(tmp_path, _frame(c=values()), **spec)
    decision = inference.decision("c")
    assert decision.kind == kind, decision
    assert reason in decision.reason, decision.reason
    assert ("c" in inference.schema.features) == (kind != "ignored")
    if kind != "ignored":
        assert inference.schema.column("c").kind == kind


def test_an_id_named_column_need_not_be_in_order(tmp_path: Path) -> None:
    """Shuffled distinct integers are an id when the column is named like one, numeric if not."""
    shuffled = list(rng.permutation(np.arange(5000, 5000 + N)))
    inference = _infer(tmp_path, _frame(customer_id=shuffled, amount=shuffled))
    assert inference.decision("customer_id").reason == "ignored: an id (every value distinct)"
    assert inference.decision("amount").kind == "numeric"


def test_a_named_feature_is_kept_even_when_constant(tmp_path: Path) -> None:
    """A column listed in features is never ignored: the user asked for it."""
    inference = _infer(tmp_path, _frame(c=["k"] * N), features=["x", "c"])
    assert inference.schema.features == ("x", "c")
    assert inference.schema.column("c").categories == ("k",)


def test_columns_record_categories_bounds_and_missing(tmp_path: Path) -> None:
    """Categories are the sorted stripped text; numeric bounds and missing cells are recorded."""
    frame = _frame(
        colour=_cycle([" red", "blue ", "?", "green", "NA"]),
        size=_cycle([1.5, 2.5, None, 9.0]),
        flag=_cycle(["yes", "no", ""]),
    )
    schema = _infer(tmp_path, frame).schema
    colour, size, flag = schema.column("colour"), schema.column("size"), schema.column("flag")
    assert colour.categories == ("blue", "green", "red")
    assert colour.missing
    assert (size.kind, size.low, size.high, size.missing) == ("numeric", 1.5, 9.0, True)
    assert (flag.kind, flag.categories, flag.missing) == ("boolean", ("false", "true"), True)
    assert not schema.column("x").missing
    assert "50 missing" in _infer(tmp_path, frame).decision("size").reason


def test_forced_categorical_numbers_are_their_text(tmp_path: Path) -> None:
    """Integer codes forced categorical are categories "1", "2", ... (as schema.category_text)."""
    frame = _frame(code=_cycle([1, 2, 10]))
    schema = _infer(tmp_path, frame, categorical=["code"]).schema
    assert schema.column("code").categories == ("1", "10", "2")


def test_features_select_and_order_the_columns(tmp_path: Path) -> None:
    """spec.features picks the features in its order; the others are ignored as not listed."""
    frame = _frame(a=_cycle(["p", "q"]), b=list(rng.normal(size=N)))
    inference = _infer(tmp_path, frame, features=["b", "a"])
    assert inference.schema.features == ("b", "a")
    assert inference.decision("x").reason == "ignored: not listed in features"
    assert [d.column for d in inference.decisions] == ["x", "y", "a", "b"]


def test_schema_survives_its_stored_form(tmp_path: Path) -> None:
    """The inferred schema round-trips through meta.json's dict and encodes its own data."""
    frame = _frame(colour=_cycle(["red", "blue"]), flag=_cycle(["yes", "no"]))
    inference = _infer(tmp_path, frame)
    assert Schema.from_dict(inference.schema.to_dict()) == inference.schema
    x = inference.schema.encode(clean_frame(frame, DEFAULT_MISSING))
    assert x.shape == (N, 3)
    assert set(np.unique(x[:, 1])) == {0.0, 1.0}


# ----- the task --------------------------------------------------------------------------------

TASK_CASES: list[tuple[str, Callable[[], list[Any]], str, tuple[str, ...], str]] = [
    ("floats", lambda: list(rng.normal(3, 1, N).round(4)), "regression", (), "r2"),
    ("many integers", lambda: list(rng.integers(0, 1000, N)), "regression", (), "r2"),
    ("few fractions", lambda: _cycle([0.5, 1.5, 2.5]), "regression", (), "r2"),
    ("yes/no", lambda: _cycle(["yes", "no"]), "binary", ("no", "yes"), "roc_auc"),
    ("zero/one", lambda: _cycle([0, 1]), "binary", ("0", "1"), "roc_auc"),
    ("labels", lambda: _cycle([" <=50K", ">50K "]), "binary", ("<=50K", ">50K"), "roc_auc"),
    ("three words", lambda: _cycle(["b", "a", "c"]), "multiclass", ("a", "b", "c"),
     "balanced_accuracy"),
    ("few integers", lambda: _cycle([1, 2, 3, 4, 5]), "multiclass", ("1", "2", "3", "4", "5"),
     "balanced_accuracy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "task", "classes", "metric"),
    [case[1:] for case in TASK_CASES],
    ids=[case[0] for case in TASK_CASES],
)
def test_task_auto_is_decided_from_the_target(
    tmp_path: Path,
    target: Callable[[], list[Any]],
    task: str,
    classes: tuple[str, ...],
    metric: str,
) -> None:
    """task = "auto" gives the task, the sorted classes and the metric the table says."""
    inference = _infer(tmp_path, _frame(y=target()))
    assert inference.schema.task == task
    assert inference.schema.classes == classes
    assert inference.schema.metric == metric
    assert inference.decision("y").kind == "target"
    assert sum(inference.class_counts.values()) == (N if classes else 0)


def test_task_from_the_config_is_kept(tmp_path: Path) -> None:
    """An explicit task wins over auto: few integer values can be a regression."""
    inference = _infer(tmp_path, _frame(y=_cycle([1, 2, 3])), task="regression")
    assert (inference.schema.task, inference.schema.classes) == ("regression", ())


def test_metric_from_the_config_is_kept(tmp_path: Path) -> None:
    """An explicit metric is the schema's metric."""
    assert _infer(tmp_path, _frame(), metric="f1").schema.metric == "f1"


def test_unlabelled_rows_are_left_out(tmp_path: Path) -> None:
    """Rows without a label are read but not counted for the classes or the columns."""
    inference = _infer(tmp_path, _frame(y=_cycle(["yes", "no", "?", "no"])))
    assert (inference.rows, inference.labelled) == (N, 150)
    assert inference.class_counts == {"no": 100, "yes": 50}


REFUSALS: list[tuple[str, Callable[[], pd.DataFrame], dict[str, Any], str]] = [
    ("one class", lambda: _frame(y=["yes"] * N), {}, "the target 'y' has one class ('yes')"),
    ("target all missing", lambda: _frame(y=["?"] * N), {}, "the target 'y' is all missing"),
    (
        "few labels",
        lambda: _frame(y=["yes", "no"] * 20 + [""] * (N - 40)),
        {},
        "only 40 rows have a label in 'y'; a model needs at least 50",
    ),
    ("missing target", _frame, {"target": "incme"}, "no such column 'incme'"),
    ("missing feature", _frame, {"features": ["x", "z"]}, "features names 'z'"),
    ("missing categorical", _frame, {"categorical": ["zz"]}, "categorical names 'zz'"),
    (
        "regression of text",
        _frame,
        {"task": "regression"},
        "the task is regression but the target 'y' is not numeric",
    ),
    (
        "binary of three",
        lambda: _frame(y=_cycle(["a", "b", "c"])),
        {"task": "binary"},
        "the task is binary but the target 'y' has 3 classes",
    ),
    (
        "multiclass of two",
        _frame,
        {"task": "multiclass"},
        "the task is multiclass but the target 'y' has 2 classes",
    ),
    ("regression metric", _frame, {"metric": "mae"}, "metric 'mae' is for a regression"),
    (
        "classifier metric",
        lambda: _frame(y=list(rng.normal(size=N))),
        {"metric": "roc_auc"},
        "metric 'roc_auc' is for a classifier",
    ),
    (
        "nothing usable",
        lambda: pd.DataFrame({"k": ["same"] * N, "y": _cycle(["a", "b"])}),
        {},
        "no column is usable as a feature (k: constant",
    ),
    (
        "too many classes",
        lambda: pd.DataFrame({"x": rng.normal(size=300), "y": [f"c{i}" for i in range(300)]}),
        {"task": "multiclass"},
        "too many classes",
    ),
]


@pytest.mark.parametrize(
    ("frame", "spec", "message"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_inference_refuses_with_the_reason(
    tmp_path: Path, frame: Callable[[], pd.DataFrame], spec: dict[str, Any], message: str
) -> None:
    """Data the model cannot be built from is a DataError saying why."""
    with pytest.raises(DataError) as caught:
        _infer(tmp_path, frame(), **spec)
    assert message in str(caught.value)


def test_a_missing_target_lists_the_columns(tmp_path: Path) -> None:
    """The error for a mistyped target suggests the close name and lists every column."""
    frame = _frame(income=_cycle(["a", "b"]))
    with pytest.raises(DataError) as caught:
        _infer(tmp_path, frame, target="incme")
    assert str(caught.value) == (
        "no such column 'incme' (did you mean 'income'?); columns are: x, y, income"
    )


# ----- reading ------------------------------------------------------------------------------------


def test_read_table_strips_text_and_reads_missing_tokens(tmp_path: Path) -> None:
    """Cells are stripped; missing tokens (after stripping) are missing; numbers become numbers."""
    path = tmp_path / "t.csv"
    path.write_text("a,b, c \n1, x ,?\n2,NA,3.5\n 3 ,  y,\n")
    frame = read_table(path, DEFAULT_MISSING)
    assert list(frame.columns) == ["a", "b", "c"]
    assert frame["a"].tolist() == [1, 2, 3]
    assert frame["a"].dtype == "int64"
    assert frame["b"].tolist() == ["x", None, "y"]
    assert frame["c"].isna().tolist() == [True, False, True]
    assert frame["c"].dtype == "float64"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("comma.csv", "a,b\n1,x\n2,y\n"),
        ("spaced.csv", "a, b\n1, x\n2, y\n"),
        ("semicolon.csv", "a;b\n1;x\n2;y\n"),
        ("tabs.tsv", "a\tb\n1\tx\n2\ty\n"),
        ("quoted.csv", 'a,b\n1,"x"\n2,"y"\n'),
        ("bom.csv", "\ufeffa,b\n1,x\n2,y\n"),
        ("crlf.csv", "a,b\r\n1,x\r\n2,y\r\n"),
    ],
)
def test_read_table_takes_common_csv_dialects(tmp_path: Path, name: str, text: str) -> None:
    """Commas (with or without a space), semicolons, tabs, quotes, a BOM, CRLF all read alike."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    frame = read_table(path, DEFAULT_MISSING)
    assert frame.to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}


def test_read_table_reads_gzipped_csv(tmp_path: Path) -> None:
    """A .csv.gz file is read like its plain form."""
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,x\n2,y\n"))
    assert read_table(path, DEFAULT_MISSING).to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}


def test_read_table_reads_parquet(tmp_path: Path) -> None:
    """A Parquet file is read, its text stripped and its missing tokens read as missing."""
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "b": [" x", "?"], "c": [True, False]}).to_parquet(path)
    frame = read_table(path, DEFAULT_MISSING)
    assert frame["b"].tolist() == ["x", None]
    assert frame["a"].tolist() == [1.0, 2.0]
    assert frame["c"].tolist() == [True, False]


READ_REFUSALS: list[tuple[str, bytes | None, str]] = [
    ("absent.csv", None, "no such file"),
    ("empty.csv", b"", "the file is empty"),
    ("blank.csv", b"\n  \n\n", "the file is empty"),
    ("junk.csv", bytes(range(256)) * 40, "binary data"),
    ("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(300), "binary data"),
    (
        "prose.txt",
        b"It was a bright cold day in April and the clocks were striking thirteen.\n"
        b"Winston Smith slipped quickly through the glass doors.\n",
        "it has a single column",
    ),
    (
        "prose-commas.txt",
        b"It was, I think, a bright cold day in April.\n"
        b"The clocks were striking thirteen.\nWinston, his chin nuzzled, slipped in, quickly.\n",
        "its lines have differing numbers of fields",
    ),
    ("header-only.csv", b"a,b,c\n", "has column names but no rows"),
    ("repeated.csv", b"a,b,a\n1,2,3\n", "column names repeat: a"),
    (
        "no-header.csv",
        b"39, State-gov, 77516, Bachelors, <=50K\n50, Private, 83311, Masters, >50K\n"
        b"38, State-gov, 215646, HS-grad, <=50K\n",
        "the first line looks like a row of data, not column names",
    ),
    ("data.csv.gz", b"\x1f\x8b\x08\x00garbage", "not a readable CSV file"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), READ_REFUSALS, ids=[c[0] for c in READ_REFUSALS]
)
def test_read_table_refuses_what_is_not_a_table(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    """A file that is absent, empty or not a table is a DataError naming the file and why."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_table(path, DEFAULT_MISSING)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_read_table_refuses_a_directory(tmp_path: Path) -> None:
    """A directory is not a data file."""
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path, DEFAULT_MISSING)


def test_read_table_refuses_parquet_junk(tmp_path: Path) -> None:
    """A .parquet file that is not Parquet is refused (or pyarrow's absence is named)."""
    path = tmp_path / "t.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"Parquet"):
        read_table(path, DEFAULT_MISSING)


# ----- the table a person checks, and the real Adult data --------------------------------------


def test_format_schema_shows_every_column_and_the_classes(tmp_path: Path) -> None:
    """The printed table has a row per column with its kind, then the task and class counts."""
    frame = _frame(colour=_cycle(["red", "blue"]), k=["same"] * N, y=_cycle(["no", "no", "yes"]))
    text = format_schema(_infer(tmp_path, frame))
    lines = text.splitlines()
    assert lines[0].split() == ["COLUMN", "KIND", "DETAIL"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:5]}
    assert rows == {"x": "numeric", "y": "target", "colour": "categorical", "k": "ignored"}
    assert "constant (every value is 'same')" in text
    assert "task:     binary: 2 classes (auto)" in text
    assert "classes:  'no' 134 (67.0%), 'yes' 66 (33.0%)" in text
    assert "metric:   roc_auc (auto for binary" in text


@pytest.fixture(scope="module")
def adult_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The UCI Adult training file with a header line, as a user would have it."""
    if not ADULT.is_file():
        pytest.skip(f"{ADULT} is not here")
    path = tmp_path_factory.mktemp("adult") / "adult.csv"
    path.write_text(", ".join(ADULT_COLUMNS) + "\n" + ADULT.read_text())
    return path


def test_adult_is_eight_categorical_six_numeric_and_binary(adult_csv: Path) -> None:
    """Adult: 8 categorical and 6 numeric features (fnlwgt numeric), binary income, none lost."""
    spec = ModelConfig(name="adult", target="income")
    inference = infer_schema(read_table(adult_csv, spec.missing_values), spec)
    schema = inference.schema
    kinds = {c.name: c.kind for c in schema.columns}
    assert list(kinds) == ADULT_COLUMNS[:-1]
    assert sorted(n for n, k in kinds.items() if k == "numeric") == [
        "age", "capital-gain", "capital-loss", "education-num", "fnlwgt", "hours-per-week",
    ]  # fmt: skip
    assert sum(k == "categorical" for k in kinds.values()) == 8
    assert (schema.task, schema.classes, schema.metric) == ("binary", ("<=50K", ">50K"), "roc_auc")
    assert schema.column("workclass").missing
    assert "?" not in schema.column("workclass").categories
    assert schema.column("sex").categories == ("Female", "Male")
    assert inference.rows == inference.labelled == 32_561
    assert inference.ignored == []
    assert inference.slice_candidates() == ["sex", "race"]


def test_adult_without_its_header_is_refused(tmp_path: Path) -> None:
    """The raw Adult file (no header line) is refused with a hint to add one."""
    if not ADULT.is_file():
        pytest.skip(f"{ADULT} is not here")
    with pytest.raises(DataError, match="add a header line"):
        read_table(ADULT, DEFAULT_MISSING)


def test_infer_schema_cleans_a_frame_given_directly() -> None:
    """A frame not read by read_table (mixed objects, padding, tokens, bools) is cleaned first."""
    frame = pd.DataFrame(
        {
            "n": _cycle([1, "2", " 3 ", None, "?"]),
            "c": _cycle([" a", "b", 3, None]),
            "flag": _cycle([True, False, None]),
            "y": _cycle(["no", "yes"]),
        }
    )
    inference = infer_schema(frame, ModelConfig(target="y"))
    schema = inference.schema
    assert (schema.column("n").kind, schema.column("n").low, schema.column("n").high) == (
        "numeric", 1.0, 3.0,
    )  # fmt: skip
    assert schema.column("c").categories == ("3", "a", "b")
    assert schema.column("flag").kind == "boolean"
    assert schema.column("flag").missing
