"""Several machines share one database and one DUS_WORKSPACE (README "A shared database", "A Ray cluster").

A worker starting on machine B cleans the workspace's leftovers (db.clean_stale_tmp): builds in progress in .tmp/
and finished model folders still marked unregistered. A process id means something only on the machine that wrote
it, so B judges by pid only its own items, and removes another machine's only once that machine is known dead
(its workers stopped beating).
DUS_HOST_ID plays the machines here; `os.getpid` is swapped to stand for a process of machine A.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage import db

A, B = "gpu-node-3", "gpu-node"  # dashes in host names; one a prefix of the other


def _dead_pid() -> int:
    """A process id that runs nowhere on this machine (so only its host's word keeps a folder naming it)."""
    pid = 2 ** 22 - 7
    while db._pid_alive(pid):
        pid -= 1
    return pid


@contextmanager
def _as(monkeypatch, host: str, pid: int):
    """Act as process `pid` of machine `host` for the block."""
    with monkeypatch.context() as m:
        m.setenv("DUS_HOST_ID", host)
        m.setattr(os, "getpid", lambda: pid)
        yield


def _build(monkeypatch, host: str, pid: int) -> Path:
    """A build in progress in .tmp/ by process `pid` of `host`."""
    with _as(monkeypatch, host, pid):
        tmp = db.new_tmp("upscale")
    (tmp / "model-00001-of-00004.safetensors").write_bytes(b"x" * 100)
    return tmp


def _finished(monkeypatch, host: str, pid: int, name: str) -> Path:
    """A finished folder renamed into models/ whose row process `pid` of `host` has not written yet."""
    folder = db.models_dir() / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with _as(monkeypatch, host, pid):
        db.mark_unregistered(folder)
    return folder


def test_host_id_is_dus_host_id_or_the_host_name(monkeypatch):
    monkeypatch.setenv("DUS_HOST_ID", A)
    assert db.host_id() == A
    monkeypatch.delenv("DUS_HOST_ID")
    assert db.host_id() == socket.gethostname()


@pytest.mark.parametrize("dead", [(), {"gpu-node-4"}], ids=["none-dead", "another-dead"])
def test_another_machines_build_and_finished_folder_survive_unless_it_is_known_dead(workspace, monkeypatch, dead):
    """The reviewer's case: A's pid runs nowhere on B, and B's start removed A's build and A's folder being
    registered."""
    pid = _dead_pid()
    build, done = _build(monkeypatch, A, pid), _finished(monkeypatch, A, pid, "merged-x")
    monkeypatch.setenv("DUS_HOST_ID", B)
    removed = db.clean_stale_tmp(dead_elsewhere=dead)
    assert removed == []
    assert build.exists() and (build / "model-00001-of-00004.safetensors").stat().st_size == 100
    assert (done / "config.json").exists() and (done / db.UNREGISTERED_MARK).exists()
    assert db.clean_unregistered_builds([done], dead_elsewhere=dead) == [] and done.exists()


def test_another_machines_leftovers_go_once_it_is_known_dead(workspace, monkeypatch):
    pid = _dead_pid()
    build, done = _build(monkeypatch, A, pid), _finished(monkeypatch, A, pid, "merged-x")
    monkeypatch.setenv("DUS_HOST_ID", B)
    removed = db.clean_stale_tmp(dead_elsewhere={A})  # A's workers stopped beating: it is known dead
    assert sorted(removed) == sorted([build, done]) and not build.exists() and not done.exists()


def test_a_pid_alive_here_does_not_keep_a_dead_machines_items(workspace, monkeypatch):
    """Machine A's pid may name a live process of machine B: once A is dead, that keeps nothing of A's."""
    alive_here = os.getppid()
    build, done = _build(monkeypatch, A, alive_here), _finished(monkeypatch, A, alive_here, "merged-x")
    monkeypatch.setenv("DUS_HOST_ID", B)
    assert sorted(db.clean_stale_tmp(dead_elsewhere={A})) == sorted([build, done])
    assert not build.exists() and not done.exists()


def test_own_leftovers_are_judged_by_pid_whatever_the_other_hosts(workspace, monkeypatch):
    dead, alive = _dead_pid(), os.getppid()
    gone, kept = _build(monkeypatch, B, dead), _build(monkeypatch, B, alive)
    gone_done, kept_done = _finished(monkeypatch, B, dead, "a"), _finished(monkeypatch, B, alive, "b")
    monkeypatch.setenv("DUS_HOST_ID", B)
    assert sorted(db.clean_stale_tmp()) == sorted([gone, gone_done])  # default: no other machine known dead
    assert kept.exists() and kept_done.exists() and not gone.exists() and not gone_done.exists()
    assert db.clean_stale_tmp(dead_elsewhere={A}) == [] and kept.exists() and kept_done.exists()


def test_old_format_folders_and_marks_count_as_this_hosts(workspace, monkeypatch):
    """Written before the host was recorded: `PREFIX-PID-UUID` and a mark holding only a pid, judged as before."""
    monkeypatch.setenv("DUS_HOST_ID", B)
    dead, alive = _dead_pid(), os.getppid()
    gone, kept = db.tmp_dir() / f"upscale-{dead}-0123abcd", db.tmp_dir() / f"import-{alive}-cafe0000"
    gone.mkdir(), kept.mkdir()
    note_gone = db.tmp_dir() / f"external-{dead}-0badf00d{db.EXTERNAL_TMP_SUFFIX}"
    beside = db.models_dir() / f".tmp-merge-{dead}-0badf00d"
    beside.mkdir()
    note_gone.write_text(str(beside))
    gone_done, kept_done = db.models_dir() / "old-dead", db.models_dir() / "old-live"
    for d, pid in ((gone_done, dead), (kept_done, alive)):
        d.mkdir()
        (d / db.UNREGISTERED_MARK).write_text(str(pid))
    removed = db.clean_stale_tmp(dead_elsewhere={A})
    assert sorted(removed) == sorted([gone, note_gone, beside, gone_done])
    assert kept.exists() and kept_done.exists() and not beside.exists()


def test_an_external_build_note_is_judged_by_its_host(workspace, monkeypatch):
    """A build beside an output folder on another filesystem is named by a note in .tmp/ (backend/outputs.py)."""
    pid = _dead_pid()
    with _as(monkeypatch, A, pid):
        tag = db.tmp_tag()
    beside = db.models_dir() / f".tmp-merge-{tag}"
    beside.mkdir()
    note = db.tmp_dir() / f"external-{tag}{db.EXTERNAL_TMP_SUFFIX}"
    note.write_text(str(beside))
    monkeypatch.setenv("DUS_HOST_ID", B)
    assert db.clean_stale_tmp() == [] and note.exists() and beside.exists()
    assert sorted(db.clean_stale_tmp(dead_elsewhere={A})) == sorted([beside, note]) and not beside.exists()


@pytest.mark.parametrize("host", ["gpu-node-3.cluster.example.org", "rack 7/gpu@1", "x" * 200])
def test_any_host_name_gives_a_short_safe_name_that_parses_back(workspace, monkeypatch, host):
    """Host names with dashes and dots, and a DUS_HOST_ID with a slash, a space or an '@', or a long one."""
    pid = _dead_pid()
    build = _build(monkeypatch, host, pid)
    assert build.parent == db.tmp_dir() and len(build.name) <= 80 and " " not in build.name
    monkeypatch.setenv("DUS_HOST_ID", B)
    assert db.clean_stale_tmp(dead_elsewhere={host[:-1], host + "-2"}) == [] and build.exists()
    assert db.clean_stale_tmp(dead_elsewhere={host}) == [build] and not build.exists()


def test_a_worker_start_removes_only_the_builds_of_machines_whose_workers_stopped_beating(workspace, monkeypatch):
    """The worker passes the machines known dead (runner.dead_hosts): a machine that never ran a worker (the CLI or
    the dashboard alone) or one whose worker beats keeps its builds."""
    from datetime import timedelta

    from backend import runner
    from storage.models import WorkerBeat, utcnow

    pid = _dead_pid()
    stale, live, never = (_build(monkeypatch, "gpu-stale", pid), _build(monkeypatch, "gpu-live", pid),
                          _build(monkeypatch, "cli-only", pid))
    with db.session() as s:
        s.add(WorkerBeat(host="gpu-stale", pid=1, seen=utcnow() - timedelta(seconds=600)))
        s.add(WorkerBeat(host="gpu-live", pid=2, seen=utcnow()))
        s.commit()
    monkeypatch.setenv("DUS_HOST_ID", B)
    assert runner.dead_hosts() == {"gpu-stale"}
    runner.worker(once=True)
    assert not stale.exists() and live.exists() and never.exists()
