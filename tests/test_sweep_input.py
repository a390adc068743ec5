"""Bad sweep input found before any work: reversed ranges, choices that cannot compose,
PostgreSQL URLs in the form users write them (postgresql://), missing database drivers."""

import importlib.util

import optuna
import pytest
from helpers import TINY_CLI, experiment_name, run_cli, runs_of
from postgres import find_pg_bin, throwaway_cluster

from eva.errors import EvaError
from eva.tracking.store import prepare_experiment, resolve_uri
from evasweep.errors import SweepError
from evasweep.space import parse_space
from evasweep.storage import open_storage
from evasweep.study import identity, open_study, resolve_storage

# ----------------------------------------------------------------------------- range(...)

ALLOWED = "range(low, high[, step]) needs low <= high and a positive step"


@pytest.mark.parametrize(
    ("key", "value", "got"),
    [
        ("model.dropout", "range(0.5, 0.1, 0.1)", "low=0.5, high=0.1, step=0.1"),
        ("epochs", "range(8, 1)", "low=8, high=1, step=1"),
        ("epochs", "range(8, 1, -1)", "low=8, high=1, step=-1"),
        ("batch_size", "range(32, 128, 0)", "low=32, high=128, step=0"),
        ("model.dropout", "range(0.0, 0.5, -0.1)", "low=0.0, high=0.5, step=-0.1"),
        ("seed", "shuffle(range(8, 1))", "low=8, high=1, step=1"),
    ],
)
def test_a_reversed_or_unstepped_range_is_one_line_naming_the_entry(key, value, got):
    with pytest.raises(SweepError) as info:
        parse_space({key: value}, [])
    hint = "" if got.endswith("step=0") else " (for a descending order: choice(...))"
    assert str(info.value) == f"'{key}={value}': {ALLOWED}, got {got}{hint}"


def test_a_reversed_range_on_the_command_line_is_one_error_line(tmp_path):
    r = run_cli(sweep_args(tmp_path, "epochs=range(8, 1)"), tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert error_lines(r.stderr) == [
        f"Error: 'epochs=range(8, 1)': {ALLOWED}, got low=8, high=1, "
        "step=1 (for a descending order: choice(...))"
    ]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "optuna.log").exists()


def test_a_range_of_one_value_still_is_a_search_space():
    (d,) = parse_space({"epochs": "range(3, 3)"}, []).distributions.values()
    assert (d.low, d.high, d.step) == (3, 3, 1)


# ----------------------------------------------------------------------------- up-front compose


def test_the_values_composed_before_the_sweep_are_every_choice_and_both_bounds():
    from evasweep.space import probes, single_probe

    space = parse_space(
        {
            "optimizer": "choice(sgd, adam)",
            "model.dropout": "interval(0.0, 0.3)",
            "epochs": "range(2, 2)",
            "l1_weight": "choice(0.0, 1e-05, 0.0001)",
        },
        ["seed=7"],
    )
    base = ["seed=7", "optimizer=sgd", "model.dropout=0.0", "epochs=2", "l1_weight=0.0"]
    # one list per value of the key with the most (l1_weight: 3): each compose is a Hydra load
    assert probes(space) == [
        ({}, base),
        (
            {"optimizer": "adam", "model.dropout": 0.3, "l1_weight": 1e-05},
            ["seed=7", "optimizer=adam", "model.dropout=0.3", "epochs=2", "l1_weight=1e-05"],
        ),
        ({"l1_weight": 0.0001}, [*base[:4], "l1_weight=0.0001"]),
    ]
    assert single_probe(space, "model.dropout", 0.3) == [*base[:2], "model.dropout=0.3", *base[3:]]


def sweep_args(tmp_path, *swept, experiment=None):
    return [
        "-m",
        "hparams_search=optuna",
        *TINY_CLI,
        f"tracking.experiment={experiment or experiment_name()}",
        f"hydra.sweeper.storage={tmp_path / 'optuna.db'}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=3",
        *swept,
    ]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


COMPOSE = "Error: a sweep value is refused before any trial: "


@pytest.mark.parametrize(
    ("swept", "expected"),
    [
        (  # a group option that does not exist, not the first choice
            "optimizer=choice(sgd, nosuch)",
            "optimizer=nosuch (a value of optimizer: choice(sgd, nosuch)): no such option "
            "(available: adam, ",
        ),
        (  # a value of the wrong type for a key of the run's schema
            "l1_weight=choice(0.0, abc)",
            "l1_weight=abc (a value of l1_weight: choice(0.0, abc)): Value 'abc' of type 'str' "
            "could not be converted to Float",
        ),
        (  # the first choice, which every other list composed shares, is the bad one
            "optimizer=choice(nosuch, sgd)",
            "optimizer=nosuch (a value of optimizer: choice(nosuch, sgd)): no such option",
        ),
        (  # a bound: Hydra's interval() is a float, epochs an int
            "epochs=interval(1, 3)",
            "epochs=1.0 (a value of epochs: interval(1.0, 3.0)): Value '1.0' of type 'float' "
            "could not be converted to Integer",
        ),
        (  # composes, but eva's validation refuses it: a builder argument of a wrong type
            "model.dropout=choice(0.1, abc)",
            "model.dropout=abc (a value of model.dropout: choice(0.1, abc)): model.dropout='abc'",
        ),
        (  # composes and is typed, but out of range
            "model.dropout=choice(0.0, 1.5)",
            "model.dropout=1.5 (a value of model.dropout: choice(0.0, 1.5)): must be in [0, 1)",
        ),
    ],
    ids=["group-option", "value-type", "first-choice", "interval-bound", "arg-type", "range"],
)
def test_a_choice_that_cannot_compose_fails_the_sweep_before_any_trial_or_run(
    mlflow_store, tmp_path, swept, expected
):
    """Whatever the sampler would draw first: the bad choice stops the command before the
    study or the MLflow parent run exists."""
    experiment = experiment_name()
    r = run_cli(sweep_args(tmp_path, swept, experiment=experiment), tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    (line,) = error_lines(r.stderr)
    assert line.startswith(COMPOSE + expected), line
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "optuna.log").exists()  # no study, so no trial
    assert runs_of(mlflow_store, experiment, missing_ok=True) == []  # no parent run


# ----------------------------------------------------------------------------- PostgreSQL URLs


def test_plain_postgresql_urls_get_the_installed_driver(tmp_path):
    for given in ("postgresql://u:p@db:5432/optuna", "postgres://u:p@db:5432/optuna"):
        assert resolve_storage(given, None, tmp_path) == (
            "postgresql+psycopg2://u:p@db:5432/optuna"
        )
        assert resolve_uri(given, tmp_path) == "postgresql+psycopg2://u:p@db:5432/optuna"
    for kept in ("postgresql+psycopg2://u@db/x", "postgresql+pg8000://u@db/x", "mysql://u@db/x"):
        assert resolve_storage(kept, None, tmp_path) == kept
        assert resolve_uri(kept, tmp_path) == kept
    assert resolve_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"


@pytest.mark.skipif(
    importlib.util.find_spec("psycopg") is not None, reason="psycopg 3 is installed here"
)
def test_a_missing_database_driver_is_named_with_its_pip_package():
    url = "postgresql+psycopg://eva:secret@127.0.0.1:9/optuna"
    with pytest.raises(SweepError) as info:
        open_storage(url)
    assert str(info.value) == (
        "hydra.sweeper.storage=postgresql+psycopg://eva:***@127.0.0.1:9/optuna: cannot open "
        "(the Python module 'psycopg' is not installed (pip install 'psycopg[binary]', or use "
        "postgresql+psycopg2://, which is installed))"
    )
    with pytest.raises(EvaError) as info:
        prepare_experiment(url, "x")
    assert str(info.value) == (
        "tracking.uri=postgresql+psycopg://eva:***@127.0.0.1:9/optuna: the Python module "
        "'psycopg' is not installed (pip install 'psycopg[binary]', or use "
        "postgresql+psycopg2://, which is installed)"
    )


@pytest.mark.skipif(find_pg_bin() is None, reason="PostgreSQL (initdb, pg_ctl) is not installed")
def test_a_plain_postgresql_url_opens_the_study_and_the_mlflow_store():
    import sqlalchemy

    ident = identity(parse_space({"model.dropout": "interval(0.0, 0.3)"}, []), ["maximize"])
    with throwaway_cluster() as url:  # postgresql+psycopg2://USER@127.0.0.1:PORT/postgres
        user_host = url.split("://", 1)[1].rsplit("/", 1)[0]
        user, host = user_host.split("@")
        plain = f"postgresql://{user}:secret@{host}"  # trust auth: any password is accepted
        study, storage = open_study(f"{plain}/postgres", "s", ident, ["maximize"], None, None)
        trial = study.ask(parse_space({"model.dropout": "interval(0.0, 0.3)"}, []).distributions)
        study.tell(trial, 0.5)
        storage.engine.dispose()
        loaded = optuna.load_study(study_name="s", storage=url)  # through psycopg2, as named
        assert loaded.user_attrs["evasweep_identity"] == ident
        assert [(t.state.name, t.value) for t in loaded.trials] == [("COMPLETE", 0.5)]
        assert loaded.trials[0].params == trial.params

        # MLflow in a database of its own (both keep their schema version in alembic_version)
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("CREATE DATABASE mlflow"))
        engine.dispose()
        uri = resolve_uri(f"{plain}/mlflow", "/")
        experiment_id = prepare_experiment(uri, "pg")
        from mlflow import MlflowClient

        assert MlflowClient(uri).get_experiment(experiment_id).name == "pg"
