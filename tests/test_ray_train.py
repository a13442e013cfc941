"""Training across nodes with Ray Train, on a real two-node local Ray cluster (tests/ray_cluster.py): run_train
with ray_workers=2 runs the trl training as DDP on one worker per node, registers the model, and a second run on
the same run folder resumes from its checkpoint. The errors when Ray is not (or wrongly) configured."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from backend import registry, training
from backend.specs import CptSpec, DataSource, Resources, SftSpec
from backend.training import TrainingError, run_train
from tests.conftest import load_state

FAST = dict(save_steps=2, eval_steps=2, batch_size=2, max_length=64, max_rows=40, learning_rate=1e-3)


def metrics_of(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def tiny(tiny_llama):
    return registry.import_folder(tiny_llama, "tiny")


@pytest.fixture
def on_cluster(ray_cluster, monkeypatch):
    # as inside a Ray Job (the worker submits queued jobs so): Ray sets RAY_ADDRESS to the GCS address
    monkeypatch.delenv("DUS_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.gcs_address)
    return ray_cluster


def test_two_workers_on_two_nodes_train_register_and_resume(tiny, tiny_llama, on_cluster, monkeypatch):
    import ray

    spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="tiny-ray", max_steps=4,
                   ray_workers=2, resources=Resources(cpus=1), keep_checkpoints=True, **FAST)
    result = run_train(spec)

    # two ranks of one DDP group, each on its own node (1 CPU per node: Ray cannot put both on one)
    workers = sorted(result["ray_ranks"], key=lambda w: w["rank"])
    assert result["world_size"] == 2 and [w["rank"] for w in workers] == [0, 1]
    assert len({w["node_id"] for w in workers}) == 2
    assert {n["raylet"]["nodeId"] for n in on_cluster.alive_nodes()} == {w["node_id"] for w in workers}
    assert {w["backend"] for w in workers} == {"gloo"}  # DDP on CPUs

    # the registered model is the trained one
    rec = registry.get("tiny-ray")
    assert rec.kind == "trained" and rec.parents == ["tiny"]
    base, trained = load_state(tiny_llama), load_state(Path(rec.path))
    assert base.keys() == trained.keys() and sum(not torch.equal(base[k], trained[k]) for k in base) > 10

    # rank 0 alone writes metrics: one loss row per step, not one per worker
    rows = metrics_of(result["run_dir"])
    losses = [(m["step"], m["loss"]) for m in rows if "loss" in m]
    assert [s for s, _ in losses] == [1, 2, 3, 4] and all(math.isfinite(v) for _, v in losses)
    assert any(m["step"] == 0 and "eval_loss" in m for m in rows)
    assert result["global_step"] == 4 and result["resumed_from"] is None
    assert ray.is_initialized() is False  # the driver left Ray as it found it

    # a second run on the same run folder (a job restarted) goes on from checkpoint-4, again on two workers
    run_dir = Path(result["run_dir"])
    assert (run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    monkeypatch.setattr(training, "run_dir_for", lambda spec: run_dir)
    again = run_train(spec.model_copy(update={"name": "tiny-ray-more", "max_steps": 6}))
    assert again["resumed_from"] == "checkpoint-4" and again["global_step"] == 6 and again["world_size"] == 2
    steps = [m["step"] for m in metrics_of(again["run_dir"]) if "loss" in m]
    assert steps == [1, 2, 3, 4, 5, 6]  # the run's history goes on; no step trained twice
    more = load_state(Path(registry.get("tiny-ray-more").path))
    assert sum(not torch.equal(trained[k], more[k]) for k in trained) > 10


def test_a_worker_that_cannot_be_placed_is_a_clear_error(tiny, on_cluster):
    # 2 workers x 2 CPUs on nodes of 1 CPU each: Ray Train refuses before starting; the error says why
    spec = CptSpec(model="tiny", data=[DataSource(source="builtin:facts-corpus")], name="too-big", max_steps=2,
                   ray_workers=2, resources=Resources(cpus=2), **FAST)
    with pytest.raises(TrainingError, match=r"cpt training failed \(exit code 1\): RuntimeError: ray_workers: 2 "
                                            r"workers of \{'CPU': 2.0\} do not fit .* room for 0"):
        run_train(spec)
    assert registry.get("too-big") is None


def test_a_failing_worker_is_a_training_error_with_its_reason(tiny_llama, on_cluster, tmp_path):
    # train_entry exits with "error: ..." on a worker (no chat template for SFT): run_train quotes it
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_llama, folder)
    (folder / "chat_template.jinja").unlink()
    registry.import_folder(folder, "no-template")
    spec = SftSpec(model="no-template", data=[DataSource(source="builtin:alpaca-mini")], name="nt", max_steps=2,
                   ray_workers=2, **FAST)
    with pytest.raises(TrainingError, match=r"sft training failed \(exit code 1\): RuntimeError: error: .* has no "
                                            r"chat template"):
        run_train(spec)
    assert registry.get("nt") is None


def test_without_ray_configured_ray_workers_is_refused(tiny, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("DUS_RAY_ADDRESS", raising=False)
    spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], max_steps=2, ray_workers=2, **FAST)
    with pytest.raises(TrainingError, match="set DUS_RAY_ADDRESS.*or use num_processes"):
        run_train(spec)
    # a dashboard URL is for submitting jobs; a training driver cannot join it
    monkeypatch.setenv("DUS_RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(TrainingError, match=r"DUS_RAY_ADDRESS=http://127.0.0.1:8265 is a Ray dashboard"):
        run_train(spec)


def test_a_queued_job_runs_as_a_ray_job_that_drives_two_train_workers(tiny, ray_cluster, monkeypatch):
    # the whole way: the worker submits the job to the cluster (DUS_RAY_ADDRESS: the dashboard); inside the Ray
    # Job, run_train joins the cluster through the RAY_ADDRESS Ray set, and the job's process asks for no CPU, so
    # both nodes' CPUs go to the two Ray Train workers
    from backend import runner

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("DUS_RAY_RESOURCES", raising=False)
    monkeypatch.setenv("DUS_RAY_ADDRESS", ray_cluster.address)
    job = runner.submit(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="tiny-ray-job",
                                max_steps=2, ray_workers=2, resources=Resources(cpus=1), **FAST))
    runner.worker(poll=0.2, once=True, slots=1)
    done = runner.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.result["world_size"] == 2 and done.result["global_step"] == 2
    assert len({w["node_id"] for w in done.result["ray_ranks"]}) == 2
    assert registry.get("tiny-ray-job").parents == ["tiny"]
    # rank 0, a Ray worker, wrote the job's metric rows (the workers get the job's id and database)
    from sqlmodel import select

    from storage import db
    from storage.models import JobMetric

    with db.session() as s:
        steps = sorted(m.step for m in s.exec(select(JobMetric).where(JobMetric.job_id == job.id,
                                                                      JobMetric.name == "loss")))
    assert steps == [1, 2]
