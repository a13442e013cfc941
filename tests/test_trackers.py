"""A training job into each experiment tracker the spec offers: MLflow and trackio run for real (their packages are
in requirements.txt) and their stores are read back, TensorBoard's too; W&B, not installed
here, is refused before launch when it has no way to log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from backend import registry
from backend.specs import DataSource, SftSpec
from backend.training import TrainingError, check_trackers, run_train, tracker_env, wandb_can_log
from storage import db


def _job(name: str, tracker: str) -> SftSpec:
    return SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name=name, max_steps=2,
                   save_steps=2, eval_fraction=0.0, max_length=32, max_rows=8, report_to=[tracker])


@pytest.fixture
def tiny(tiny_llama, monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "TRACKIO_DIR", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    return registry.import_folder(tiny_llama, "tiny")


def test_mlflow_trackio_and_tensorboard_log_the_losses_into_the_run_folder(tiny):
    """One job into all three trackers at once (three tests and three training runs until session 21; the
    TensorBoard one was in test_recipe.py).

    MLflow 3.18 refuses its ./mlruns file store ("maintenance mode"): the job failed at its first log line. Now
    a SQLite store in the run folder, which MLflow's own client reads back: one run, the trainer's loss per step.
    trackio's default is one folder in HF_HOME shared by every run; a job's now goes to its run folder."""
    import mlflow

    result = run_train(_job("ml", "mlflow").model_copy(update={"report_to": ["mlflow", "trackio", "tensorboard"]}))
    # MLflow
    store = Path(result["run_dir"]) / "mlflow.db"
    assert store.is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_name for r in runs] == [Path(result["run_dir"]).name]
    losses = client.get_metric_history(runs[0].info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2] and all(0 < m.value < 20 for m in losses)
    assert runs[0].data.params["max_steps"] == "2"
    # trackio
    (store,) = (Path(result["run_dir"]) / "trackio").glob("*.db")
    with sqlite3.connect(store) as con:
        rows = con.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id").fetchall()
    losses = [(step, json.loads(m)["train/loss"]) for run, step, m in rows if b"train/loss" in m]
    assert {run for run, _, _ in rows} == {Path(result["run_dir"]).name}
    assert len(losses) == 2 and all(0 < loss < 20 for _, loss in losses)
    # TensorBoard
    events = list(Path(result["run_dir"], "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]  # the trainer's own loss, step by step
    assert [e.step for e in acc.Scalars("train/loss")][:2] == [1, 2]
    # off by default; a tracker that is not installed is refused before launch, naming the field
    assert SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")]).report_to == []
    import importlib.util

    missing = next((t for t in ("trackio", "mlflow", "wandb") if importlib.util.find_spec(t) is None), None)
    if missing:
        with pytest.raises(TrainingError, match=f"report_to: {missing} is not installed"):
            check_trackers(_job("tb", "tensorboard").model_copy(update={"report_to": [missing]}))


def test_a_users_own_tracker_locations_win(tiny, monkeypatch, tmp_path):
    spec = _job("x", "mlflow").model_copy(update={"report_to": ["mlflow", "trackio", "wandb"]})
    assert tracker_env(spec, tmp_path) == {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path.resolve()}/mlflow.db",
                                           "TRACKIO_DIR": str(tmp_path / "trackio"), "WANDB_DIR": str(tmp_path)}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("TRACKIO_DIR", "/data/trackio")
    monkeypatch.setenv("WANDB_DIR", "/data/wandb")
    assert tracker_env(spec, tmp_path) == {}


def test_wandb_without_a_key_is_refused_before_launch(tiny, monkeypatch, tmp_path):
    """A job has no terminal: W&B without credentials failed it at its first log line ("No API key configured"),
    after the model loaded. Refused before launch now, saying the three ways out; each of them is accepted."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "wandb" else real(n, *a))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login u password p\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    spec = _job("w", "wandb")
    with pytest.raises(TrainingError, match=r"wandb has no API key.*wandb login.*WANDB_API_KEY.*WANDB_MODE=offline"):
        check_trackers(spec)
    with pytest.raises(TrainingError, match="no API key"):
        run_train(spec)
    assert registry.get("w") is None and not list((db.workspace() / "runs").glob("w-*"))
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert wandb_can_log()
    netrc.write_text("machine wandb.example.org login user password k\n")
    assert not wandb_can_log()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_can_log()
    monkeypatch.delenv("WANDB_BASE_URL")
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_API_KEY", "k" * 40)):
        monkeypatch.setenv(var, value)
        check_trackers(spec)
        monkeypatch.delenv(var)
