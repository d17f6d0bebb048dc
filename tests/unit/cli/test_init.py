"""``selfheal init``: infer the schema, print it, write a config that ``load_config`` accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from selfheal_daemon.cli.app import app
from selfheal_daemon.cli.init import data_path, model_name
from selfheal_daemon.config import load_config
from selfheal_daemon.model.infer import infer_schema, read_table

runner = CliRunner()
ADULT = Path("/work/shared/data/adult/adult.data")
ADULT_HEADER = (
    "age, workclass, fnlwgt, education, education-num, marital-status, occupation, relationship, "
    "race, sex, capital-gain, capital-loss, hours-per-week, native-country, income"
)
N = 300


@pytest.fixture
def churn(tmp_path: Path) -> Path:
    """A small churn table: numeric, categorical, boolean, an id, a constant, a binary target."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(1, N + 1),
            "tenure": rng.integers(0, 72, N),
            "monthly": rng.normal(70, 20, N).round(2),
            "plan": rng.choice(["basic", "plus", "pro"], N),
            "region": rng.choice(["north", "south", "east", "west", "?"], N),
            "paperless": rng.choice(["yes", "no"], N),
            "source": ["web"] * N,
            "churned": rng.choice(["stayed", "left"], N),
        }
    )
    path = tmp_path / "data" / "churn.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    return path


def _init(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["init", *args])
    return result.exit_code, result.output


def test_init_writes_a_config_load_config_accepts(churn: Path, tmp_path: Path) -> None:
    """The written config loads, serves the data file, and lists every decision explicitly."""
    out = tmp_path / "config.toml"
    code, output = _init("--data", str(churn), "--target", "churned", "--out", str(out))
    assert code == 0, output
    cfg = load_config(out)
    assert cfg.training_data == churn.resolve()
    assert cfg.state_dir == tmp_path.resolve() / "var"
    model = cfg.model
    assert model is not None
    assert (model.name, model.task, model.target, model.metric) == (
        "churn", "binary", "churned", "roc_auc",
    )  # fmt: skip
    assert model.features == ["tenure", "monthly", "plan", "region", "paperless"]
    assert model.categorical == ["plan", "region"]
    assert model.ignore == ["customer_id", "source"]
    assert model.pipeline == ""
    assert model.missing_values == ["", "?", "NA", "N/A", "null"]
    text = out.read_text()
    assert '"customer_id",  # an id (every value distinct)' in text
    assert "# constant (every value is 'web')" in text
    assert '# slices = ["plan", "region"]' in text
    assert f"wrote {out}" in output
    kinds = {line.split()[0]: line.split()[1] for line in output.splitlines()[1:9]}
    assert kinds["paperless"] == "boolean"
    assert kinds["churned"] == "target"


def test_the_written_config_infers_the_same_schema_again(churn: Path, tmp_path: Path) -> None:
    """Inferring from the written [model] table gives the schema init printed: nothing drifts."""
    out = tmp_path / "config.toml"
    assert _init("--data", str(churn), "--target", "churned", "--out", str(out))[0] == 0
    cfg = load_config(out)
    first = infer_schema(read_table(churn, ["", "?", "NA", "N/A", "null"]), cfg.model_spec)
    again = infer_schema(read_table(churn, cfg.model_spec.missing_values), cfg.model_spec)
    assert first.schema == again.schema
    assert first.schema.features == tuple(cfg.model_spec.features)


def test_init_refuses_to_overwrite_without_force(churn: Path, tmp_path: Path) -> None:
    """An existing OUT is kept unless --force; with it, it is replaced."""
    out = tmp_path / "config.toml"
    out.write_text("# mine\n")
    code, output = _init("--data", str(churn), "--target", "churned", "--out", str(out))
    assert code != 0
    assert "error:" in output
    assert "exists; pass --force" in output
    assert out.read_text() == "# mine\n"
    code, output = _init("--data", str(churn), "--target", "churned", "--out", str(out), "--force")
    assert code == 0, output
    assert load_config(out).model is not None


def test_init_regression_with_name_and_task(churn: Path, tmp_path: Path) -> None:
    """--task and --name are written as given; a regression has no slice suggestion."""
    out = tmp_path / "sub" / "reg.toml"
    code, output = _init(
        "--data", str(churn), "--target", "monthly", "--task", "regression",
        "--name", "spend", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    model = load_config(out).model
    assert model is not None
    assert (model.name, model.task, model.metric) == ("spend", "regression", "r2")
    assert "churned" in model.categorical
    assert "slices" not in out.read_text()
    assert tomllib.loads(out.read_text())["training"]["data"] == "../data/churn.csv"


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "target", "message"),
    [
        ("t.csv", b"a,b\n" + b"1,x\n" * 60, "incme", "no such column 'incme'; columns are: a, b"),
        ("t.csv", b"", "b", "the file is empty"),
        ("t.csv", bytes(range(256)) * 10, "b", "not a CSV or Parquet table"),
        ("t.txt", b"Once upon a time\nthere was a table\n", "b", "it has a single column"),
        ("t.csv", b"a,b\n" + b"1,x\n2,x\n" * 40, "b", "the target 'b' has one class ('x')"),
        ("t.csv", b"a,b\n", "b", "has column names but no rows"),
    ],
    ids=["no such column", "empty", "binary", "prose", "one class", "no rows"],
)
def test_init_refuses_bad_input_with_an_error(
    tmp_path: Path, name: str, content: bytes, target: str, message: str
) -> None:
    """Bad input exits non-zero with "error: ..." saying why, and writes no config."""
    data = _write(tmp_path, name, content)
    out = tmp_path / "config.toml"
    code, output = _init("--data", str(data), "--target", target, "--out", str(out))
    assert code != 0
    assert "selfheal: error:" in output
    assert message in output
    assert not out.exists()


def test_init_refuses_an_absent_file(tmp_path: Path) -> None:
    """A data file that does not exist is named in the error."""
    out = str(tmp_path / "config.toml")
    code, output = _init("--data", str(tmp_path / "nope.csv"), "--target", "y", "--out", out)
    assert code != 0
    assert "nope.csv: no such file" in output


def test_init_refuses_a_bad_name(churn: Path, tmp_path: Path) -> None:
    """A --name the [model] table would refuse is refused before any file is written."""
    out = tmp_path / "config.toml"
    code, output = _init(
        "--data", str(churn), "--target", "churned", "--name", "my model", "--out", str(out)
    )
    assert code != 0
    assert "--name: String should match pattern" in output
    assert not out.exists()


def test_init_escapes_odd_column_names(tmp_path: Path) -> None:
    """Column names with quotes, backslashes and unicode survive into a config that loads."""
    rng = np.random.default_rng(0)
    odd = ['say "hi"', "back\\slash", "größe", "label"]
    frame = pd.DataFrame(
        {
            odd[0]: rng.normal(size=N),
            odd[1]: rng.choice(["a", "b"], N),
            odd[2]: rng.integers(0, 100, N),
            odd[3]: rng.choice(["p", "q", "r"], N),
        }
    )
    data = tmp_path / "odd.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "config.toml"
    code, output = _init("--data", str(data), "--target", "label", "--out", str(out))
    assert code == 0, output
    model = load_config(out).model
    assert model is not None
    assert model.features == odd[:3]
    assert model.task == "multiclass"
    assert model.metric == "balanced_accuracy"


def test_init_help_describes_the_command() -> None:
    """--help says what init infers and names every option."""
    result = runner.invoke(app, ["init", "--help"])
    assert result.exit_code == 0
    for word in ("--data", "--target", "--task", "--out", "--name", "--force", "ignored"):
        assert word in result.output


@pytest.mark.parametrize(
    ("data", "out", "expected"),
    [
        ("/srv/x/data.csv", "/srv/x/config.toml", "data.csv"),
        ("/srv/x/d/data.csv", "/srv/x/config.toml", "d/data.csv"),
        ("/srv/data.csv", "/srv/x/y/config.toml", "../../data.csv"),
        ("/data.csv", "/srv/x/y/z/config.toml", "/data.csv"),
    ],
)
def test_data_path_is_relative_when_close(data: str, out: str, expected: str) -> None:
    """[training] data is relative to the config's directory, absolute when far above it."""
    assert data_path(Path(data), Path(out)) == expected


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("adult.csv", "adult"),
        ("my data.csv.gz", "my-data"),
        ("x.parquet", "x"),
        ("__.csv", "model"),
    ],
)
def test_model_name_comes_from_the_file_name(file: str, name: str) -> None:
    """The default model name is the data file's name without its suffix, made a valid name."""
    assert model_name(Path(file)) == name


def test_init_on_adult_writes_its_model(tmp_path: Path) -> None:
    """On the real Adult data (header added), init writes 14 features, 8 categorical, binary."""
    if not ADULT.is_file():
        pytest.skip(f"{ADULT} is not here")
    data = tmp_path / "adult.csv"
    data.write_text(ADULT_HEADER + "\n" + ADULT.read_text())
    out = tmp_path / "config.toml"
    code, output = _init("--data", str(data), "--target", "income", "--out", str(out))
    assert code == 0, output
    model = load_config(out).model
    assert model is not None
    assert (model.name, model.task, model.metric) == ("adult", "binary", "roc_auc")
    assert len(model.features) == 14
    assert len(model.categorical) == 8
    assert "fnlwgt" in model.features
    assert "fnlwgt" not in model.categorical
    assert model.ignore == []
    assert "'<=50K' 24,720 (75.9%), '>50K' 7,841 (24.1%)" in output
    assert '# slices = ["sex", "race"]' in out.read_text()
