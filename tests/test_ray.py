"""A Ray cluster as the job backend, on a real two-node local cluster (tests/ray_cluster.py): jobs run as Ray Jobs on
the nodes they are sent to, cancel stops the job's processes, a job lost with its node is interrupted and resumes
from its checkpoint elsewhere, and what the cluster cannot run is refused at submission with the reason.

Jobs are sent to a node with DUS_RAY_RESOURCES (custom resources each node was started with: `head`, `node2`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from backend import registry, runner
from backend.cluster import ray_jobs, ray_view
from backend.specs import DataSource, EvalSpec, Resources, SftSpec, UpscaleSpec
from storage import db
from storage.models import EvalScore, Job
from tests.test_faults import release_file, release_progress, running_job
from tests.test_jobs import group_alive, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def on_ray(ray_cluster, monkeypatch, tiny_llama):
    monkeypatch.setenv("DUS_RAY_ADDRESS", ray_cluster.address)
    monkeypatch.delenv("DUS_RAY_RESOURCES", raising=False)
    registry.import_folder(tiny_llama, "tiny")
    return ray_cluster


def node_ids(cluster) -> dict[str, str]:
    """`head` / `node2` -> Ray node id."""
    return {("head" if n.head else "node2"): n.id for n in ray_jobs.nodes(cluster.address) if n.alive}


def driver_node(cluster, job_id: int) -> str:
    return ray_jobs.client(cluster.address).get_job_info(runner.get(job_id).cluster_ref).driver_node_id


def pin(monkeypatch, node: str) -> None:
    monkeypatch.setenv("DUS_RAY_RESOURCES", f'{{"{node}": 1}}')


def background_worker() -> threading.Thread:
    t = threading.Thread(target=runner.worker, kwargs=dict(poll=0.2, once=True, slots=2), daemon=True)
    t.start()
    return t


def test_an_upscale_and_an_evaluation_run_as_ray_jobs_on_the_nodes_they_are_sent_to(on_ray, monkeypatch):
    ids = node_ids(on_ray)
    up = runner.submit(UpscaleSpec(base="tiny", m=1, name="up"))
    pin(monkeypatch, "node2")
    runner.worker(poll=0.2, once=True, slots=2)
    ev = runner.submit(EvalSpec(models=["tiny", "up"], tasks=["perplexity"], limit=4))
    pin(monkeypatch, "head")
    runner.worker(poll=0.2, once=True, slots=2)
    for job in (up, ev):
        done = runner.get(job.id)
        assert done.status == "succeeded", (done.message, done.error, Path(done.log_path).read_text()[-2000:])
        assert done.host == f"ray:{on_ray.address}" and done.cluster_ref.startswith(f"dus-{ray_jobs.workspace_tag()}")
        assert f"job {job.id} (" in Path(done.log_path).read_text()  # the entrypoint appended to the job's log
    assert driver_node(on_ray, up.id) == ids["node2"] and driver_node(on_ray, ev.id) == ids["head"]
    assert registry.get("up").num_layers == 10 and registry.get("up").parents == ["tiny"]
    with db.session() as s:
        scores = {(r.model, r.task): r.value for r in s.exec(select(EvalScore).where(
            EvalScore.job_id == ev.id, EvalScore.metric == "perplexity"))}  # not its bootstrap error's row
    assert set(scores) == {("tiny", "perplexity"), ("up", "perplexity")} and all(v > 1 for v in scores.values())
    # a resumed (failed) job is a new attempt: a new submission id, the old one stays Ray's record of the first
    first = runner.get(up.id).cluster_ref
    runner._update(up.id, status="failed")
    registry.delete("up", force=True)
    runner.resume(up.id)
    runner.worker(poll=0.2, once=True)
    again = runner.get(up.id)
    assert again.status == "succeeded" and again.cluster_ref == first[:-1] + "2"


def test_cancel_stops_the_ray_job_and_every_process_it_started(on_ray, monkeypatch):
    monkeypatch.setenv("DUS_TEST_PROGRESS_DELAY", "0.5")  # forwarded to the entrypoint (runtime_env env_vars)
    pin(monkeypatch, "node2")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="slow", shard_size="20KB"))
    worker = background_worker()
    running = wait_for(lambda: running_job(job.id, 2), 90, "the job to be under way on the cluster")
    assert group_alive(running.pid)
    assert runner.cancel(job.id).status == "cancelled"
    wait_for(lambda: not group_alive(running.pid), 30, "Ray to stop the job's process group")
    worker.join(30)
    assert not worker.is_alive()
    info = ray_jobs.client(on_ray.address).get_job_info(running.cluster_ref)
    assert info.status.value == "STOPPED"
    assert runner.get(job.id).status == "cancelled" and registry.get("slow") is None


def test_a_worker_that_dies_leaves_its_job_running_and_the_next_worker_watches_it(on_ray, monkeypatch):
    monkeypatch.setenv("DUS_TEST_PROGRESS_DELAY", "0.3")
    monkeypatch.setenv("DUS_TEST_PROGRESS_RELEASE", str(release_file()))  # forwarded too (DUS_*)
    pin(monkeypatch, "node2")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="survivor", shard_size="20KB"))
    worker = subprocess.Popen([sys.executable, "-m", "backend", "worker", "--poll", "0.2"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = wait_for(lambda: running_job(job.id, 2), 90, "the job to be under way on the cluster")
        worker.kill()
        worker.wait()
    finally:
        worker.kill()
    assert runner.recover_orphans() == [] and group_alive(running.pid)  # Ray runs it on: it is no orphan
    release_progress()  # seen alive after its worker's death: the rest need not crawl (52 progress lines x 0.3 s)
    runner.worker(poll=0.2, once=True)  # adopts the job in flight and waits for it
    done = runner.get(job.id)
    assert done.status == "succeeded" and done.pid == running.pid and done.cluster_ref == running.cluster_ref
    assert registry.get("survivor").num_layers == 10


def test_bad_input_is_refused_at_submission_with_the_reason(on_ray, monkeypatch, tiny_llama, tmp_path):
    # more CPUs / a GPU than any node has: the message names what each node has
    with pytest.raises(ValueError, match=r"4 CPU.*cannot hold.*1 CPUs, 0 GPUs.*head 1.*1 CPUs, 0 GPUs.*node2 1"):
        runner.submit(UpscaleSpec(base="tiny", m=1, resources=Resources(cpus=4)))
    with pytest.raises(ValueError, match="1 GPU"):
        runner.submit(UpscaleSpec(base="tiny", m=1, resources=Resources(gpus=1)))
    # Ray Train workers: each asks `resources`, the job's own process nothing it would take from them
    train = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], ray_workers=3,
                    resources=Resources(cpus=1))
    with pytest.raises(ValueError, match=r"1 CPU per worker, 3 workers.*cannot hold"):
        runner.submit(train)
    assert ray_jobs.entrypoint_asks(train.model_copy(update={"ray_workers": 2})) == {}
    pin(monkeypatch, "node2")
    assert ray_jobs.entrypoint_asks(train.model_copy(update={"ray_workers": 2})) == {"node2": 1}
    assert ray_jobs.entrypoint_asks(train.model_copy(update={"ray_workers": 1})) == {"CPU": 1, "node2": 1}
    monkeypatch.delenv("DUS_RAY_RESOURCES")
    # a spec's own custom resources place it too; one no node has is refused
    assert ray_jobs.asks(UpscaleSpec(base="tiny", m=1, resources=Resources(custom={"node2": 1}))) == \
        {"CPU": 1, "node2": 1}
    with pytest.raises(ValueError, match="1 a100"):
        runner.submit(UpscaleSpec(base="tiny", m=1, resources=Resources(custom={"a100": 1})))
    # what every node must see: the workspace's own marker file (one file system, not a folder at the same path),
    # and model folders outside the workspace; folders inside it are covered by the marker (one cached check)
    need = ray_jobs.spec_paths(EvalSpec(models=["tiny"], tasks=["perplexity"]))
    marker = ray_jobs.workspace_marker()
    assert marker.parent == db.workspace() and marker.is_file() and ray_jobs.workspace_marker() == marker
    assert set(need) == {str(marker), sys.executable, registry.get("tiny").path}
    # a registered model whose folder has gone: no node sees it, and the message names every node
    hidden = tmp_path / "hidden"
    shutil.copytree(tiny_llama, hidden)
    registry.import_folder(hidden, "hid")
    path = registry.get("hid").path
    shutil.move(path, tmp_path / "moved")  # the row still points at it; no node can read it now
    with pytest.raises(ValueError) as err:
        runner.submit(UpscaleSpec(base="hid", m=1))
    ids = node_ids(on_ray)
    assert f"{path} (the folder of model 'hid')" in str(err.value)
    assert all(f"node {i[:8]}" in str(err.value) for i in ids.values()), str(err.value)
    # the CLI says the same and exits 2
    cli = subprocess.run([sys.executable, "-m", "backend", "upscale", "--base", "tiny", "--m", "1", "--queue"],
                         cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, DUS_RAY_RESOURCES='{"gpu-x": 1}'))
    assert cli.returncode == 2 and "1 gpu-x" in cli.stderr and "cannot hold" in cli.stderr, cli.stderr
    with db.session() as s:
        assert s.exec(select(Job)).all() == []  # nothing queued that could never run


def test_an_unreachable_cluster_is_named_at_submission_and_at_worker_start(tiny_llama, monkeypatch):
    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setenv("DUS_RAY_ADDRESS", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"http://127.0.0.1:9 \(DUS_RAY_ADDRESS\) does not answer.*ray start --head"):
        runner.submit(UpscaleSpec(base="tiny", m=1))
    cli = subprocess.run([sys.executable, "-m", "backend", "worker", "--once"], cwd=ROOT, capture_output=True,
                         text=True)
    assert cli.returncode == 2 and "http://127.0.0.1:9" in cli.stderr and "ray start --head" in cli.stderr
    with db.session() as s:
        assert s.exec(select(Job)).all() == []
    monkeypatch.setenv("DUS_RAY_ADDRESS", "127.0.0.1:6379")  # the GCS address, not the Jobs API
    with pytest.raises(ValueError, match="dashboard URL"):
        runner.submit(UpscaleSpec(base="tiny", m=1))
    # the page says it too, and queues nothing
    monkeypatch.setenv("DUS_RAY_ADDRESS", "http://127.0.0.1:9")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/build.py").run()
    at.button(key="build").click().run()
    assert not at.exception
    assert any(e.value.startswith("Not queued: ") and "http://127.0.0.1:9" in e.value for e in at.error), at.error
    assert runner.list_jobs() == [] and "build_job" not in at.session_state


def test_cluster_status_in_the_cli_and_on_the_jobs_page(on_ray, monkeypatch):
    monkeypatch.setenv("DUS_TEST_PROGRESS_DELAY", "0.5")
    pin(monkeypatch, "node2")
    job = runner.submit(UpscaleSpec(base="tiny", m=1, name="shown", shard_size="20KB"))
    worker = background_worker()
    try:
        wait_for(lambda: running_job(job.id, 1), 90, "the job to run")
        ids = node_ids(on_ray)

        def taken():  # Ray's usage report is a few seconds old
            view = ray_view.status()
            node2 = next(n for n in view.nodes if n.id == ids["node2"])
            return node2.available.get("node2") == 0 and node2.available["CPU"] == 0 and (view, node2)

        view, node2 = wait_for(taken, 30, "node2's CPU and node2 resource to be taken by the job")
        assert [(p.job_id, p.node_id) for p in view.jobs] == [(job.id, ids["node2"])]
        assert node2.alive and node2.total["CPU"] == 1 and node2.total["node2"] == 1
        cli = subprocess.run([sys.executable, "-m", "backend", "cluster", "status"], cwd=ROOT, capture_output=True,
                             text=True)
        assert cli.returncode == 0, cli.stderr
        node_line = next(ln for ln in cli.stdout.splitlines() if ln.startswith(ids["node2"][:8]))
        assert node_line.rstrip().endswith(str(job.id)) and "node2 0/1" in node_line
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
        at.switch_page("pages/jobs.py").run()
        assert not at.exception
        frames = {df.value.columns[0]: df.value for df in at.dataframe}
        assert set(frames["node"]["node"]) == {i[:8] for i in ids.values()}
        assert list(frames["job"]["job"]) == [job.id] and list(frames["job"]["node"]) == [ids["node2"][:8]]
    finally:
        runner.cancel(job.id)
        worker.join(30)
    monkeypatch.setenv("DUS_RAY_ADDRESS", "http://127.0.0.1:9")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/jobs.py").run()
    assert any("does not answer" in e.value for e in at.error)
    monkeypatch.delenv("DUS_RAY_ADDRESS")
    at.switch_page("pages/jobs.py").run()
    # no address here, but this workspace's job ran on the cluster: the section names it (ray_view.where_jobs_run)
    address = runner.get(job.id).host.removeprefix("ray:")
    assert any(f"Jobs run on the Ray cluster at {address}" in c.value and f"DUS_RAY_ADDRESS={address}" in c.value
               for c in at.caption), [c.value for c in at.caption]


def test_a_recipe_on_the_cluster_fans_out_its_evaluations_or_is_refused_whole(on_ray, tiny_llama):
    from backend import recipe
    from storage.models import RecipeRun

    data = yaml.safe_load(recipe.preset("smoke", str(tiny_llama)))
    greedy = yaml.safe_load(yaml.safe_dump(data))
    greedy["stages"][1]["resources"] = {"cpus": 8}  # one stage no node can hold
    with pytest.raises(ValueError, match="8 CPU"):
        recipe.run_recipe(yaml.safe_dump(greedy, sort_keys=False), queue=True)
    with db.session() as s:  # refused whole: no run, no job of its earlier stages
        assert s.exec(select(RecipeRun)).all() == [] and s.exec(select(Job)).all() == []
    recipe.run_recipe(yaml.safe_dump(data, sort_keys=False), queue=True)
    evals = [j for j in runner.list_jobs() if j.kind == "eval"]
    assert sorted(len(j.spec["models"]) for j in evals) == [1] * 5  # one job per model, side by side on the nodes
    assert len({m for j in evals for m in j.spec["models"]}) == 5


def test_a_job_lost_with_its_node_is_interrupted_and_resumes_from_its_checkpoint(ray_cluster, tiny_llama, monkeypatch,
                                                                                  workspace):
    """A third node (resource `node3`) joins the session's cluster for this test alone and is killed: a cluster of
    its own cost a start and a stop (~15 s). Last in the file: the dead node stays in the cluster's node list, which
    the tests above read; tests/test_ray_train.py reads only the alive nodes."""
    registry.import_folder(tiny_llama, "tiny")
    spec = SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="t", max_steps=200,
                   save_steps=10, eval_fraction=0.0, batch_size=1, max_length=32, learning_rate=1e-3)
    cluster = ray_cluster
    node3 = len(cluster.nodes)
    cluster.add_node(1, {"node3": 1})
    monkeypatch.setenv("DUS_RAY_ADDRESS", cluster.address)
    monkeypatch.delenv("DUS_RAY_RESOURCES", raising=False)
    pin(monkeypatch, "node3")
    job = runner.submit(spec)
    worker = background_worker()
    run_dir = workspace / "runs" / f"job-{job.id}"  # backend/training.py run_dir_for, inside a job
    wait_for(lambda: list(run_dir.glob("checkpoints/checkpoint-*/trainer_state.json"))
             or runner.get(job.id).status in runner.FINISHED, 240, "a checkpoint")
    assert runner.get(job.id).status == "running", (runner.get(job.id).message, runner.get(job.id).error)
    pid = runner.get(job.id).pid
    cluster.kill_node(node3)  # it and everything its raylet started; the job's own session ends with its parent
    lost = wait_for(lambda: (j := runner.get(job.id)).status != "running" and j, 60, "the job to be judged lost")
    worker.join(30)
    assert lost.status == "interrupted" and "Ray node" in lost.message and "was lost" in lost.message, lost.message
    assert "resume it" in lost.message
    wait_for(lambda: not group_alive(pid), 15, "the job's processes to end with their node")
    assert registry.get("t") is None
    pin(monkeypatch, "head")
    runner.resume(job.id)
    runner.worker(poll=0.2, once=True)
    done = runner.get(job.id)
    assert done.status == "succeeded", (done.error, Path(done.log_path).read_text()[-3000:])
    assert done.result["resumed_from"].startswith("checkpoint-") and done.result["global_step"] == 200
    assert Path(run_dir).is_dir() and registry.get("t").parents == ["tiny"]
    assert ray_jobs.client(cluster.address).get_job_info(done.cluster_ref).driver_node_id == \
        next(n.id for n in ray_jobs.nodes(cluster.address) if n.head)

