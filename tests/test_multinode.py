"""Training across machines with `accelerate launch` (no Ray): two "machines" on localhost (two launchers, one
process each, gloo on the CPU), the validators, the launch command as accelerate reads it, and the Slurm script
(run for real with stand-ins for `srun` and `scontrol`)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend import registry, runner
from backend.cluster.slurm import slurm_script
from backend.specs import DataSource, SftSpec, load_spec
from backend.training import launch_command, multi_machine_run_name, run_dir_for
from tests.conftest import load_state
from tests.test_cli_runner import here

ROOT = Path(__file__).resolve().parent.parent
DATA = [DataSource(source="builtin:alpaca-mini")]
TINY = ["--max-steps", "4", "--save-steps", "2", "--eval-steps", "2", "--batch-size", "2", "--max-length", "64",
        "--max-rows", "40", "--learning-rate", "1e-3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec(**kw) -> SftSpec:
    return SftSpec(model="tiny", data=DATA, **kw)


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backend", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen], timeout: int = 240) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out[-3000:]
        outs.append(out)
    return outs


# --- the spec: errors that name the field

@pytest.mark.parametrize("fields, words", [
    (dict(num_machines=2, machine_rank=2, main_process_ip="h0"), ["machine_rank 2", "num_machines 2", "0 to 1"]),
    (dict(num_machines=2, machine_rank=1), ["main_process_ip", "num_machines 2"]),
    (dict(num_machines=2, main_process_ip="h0", ray_workers=2), ["num_machines 2", "ray_workers 2"]),
    (dict(machine_rank=1), ["machine_rank 1", "num_machines 1"]),
])
def test_bad_machine_fields_are_refused_by_name(fields, words):
    with pytest.raises(ValidationError) as exc:
        spec(**fields)
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_cli_reports_a_bad_rank_and_exits_2():
    p = cli("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--num-machines", "2",
            "--machine-rank", "3", "--main-process-ip", "127.0.0.1")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and "machine_rank 3 with num_machines 2" in out


# --- the launch command, read back by accelerate's own parser

def test_launch_command_places_each_machine_and_counts_all_processes(tmp_path):
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    s = spec(num_processes=2, num_machines=3, machine_rank=1, main_process_ip="10.0.0.7")
    cmd = launch_command(s, tmp_path)
    assert cmd[-3:] == ["-m", "backend.train_entry", str(tmp_path)]
    args = launch_command_parser().parse_args(cmd[3:])  # after `python -m accelerate.commands.launch`
    assert (args.num_processes, args.num_machines, args.machine_rank) == (6, 3, 1)  # total over the machines
    assert (args.main_process_ip, args.main_process_port, args.multi_gpu) == ("10.0.0.7", 29500, True)
    prepare_multi_gpu_env(args)  # what accelerate hands torchrun: 2 here, 3 nodes, rendezvous at machine 0
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("2", "3", 1)
    assert args.rdzv_endpoint == "10.0.0.7:29500"

    one = launch_command(spec(), tmp_path)  # one machine, one process: as before
    assert one[one.index("--num_machines") + 1] == "1" and "--cpu" in one and "--machine_rank" not in one
    assert one[one.index("--main_process_port") + 1] != "29500"  # a free port
    assert launch_command(spec(num_machines=2, main_process_ip="h", main_process_port=1234), tmp_path).count("1234")

    cfg = tmp_path / "fsdp.yaml"
    cfg.write_text("distributed_type: FSDP\nnum_processes: 16\n")
    with_cfg = launch_command(spec(accelerate_config=str(cfg), num_machines=2, machine_rank=1,
                                   main_process_ip="h0"), tmp_path)
    assert "--num_processes" not in with_cfg  # the config's total stands; the spec places this machine
    assert with_cfg[with_cfg.index("--machine_rank") + 1] == "1" and "--num_machines" in with_cfg


def test_run_folder_is_the_same_on_every_machine(monkeypatch):
    a = spec(name="x", num_machines=2, main_process_ip="h0", main_process_port=1111)
    b = spec(name="x", num_machines=2, machine_rank=1, main_process_ip="10.1.1.1")  # same run, other placement
    monkeypatch.setenv("DUS_JOB_ID", "41")  # machine 0 may be a dashboard job; the others know no job id
    assert run_dir_for(a) == run_dir_for(b) and run_dir_for(a).name == multi_machine_run_name(a)
    assert run_dir_for(a).name.startswith("x-x2-")
    assert multi_machine_run_name(a.model_copy(update={"max_steps": 99})) != multi_machine_run_name(a)
    assert run_dir_for(spec()).name == "job-41"  # one machine: as before
    monkeypatch.setenv("DUS_RUN_NAME", "chosen")
    assert run_dir_for(a).name == "chosen"
    monkeypatch.setenv("DUS_RUN_NAME", "../up")
    with pytest.raises(ValueError, match="DUS_RUN_NAME"):
        run_dir_for(a)


# --- the Slurm script

def test_slurm_script_values_and_syntax(tmp_path, workspace):
    path = tmp_path / "my spec.yaml"
    s = spec(name="big", num_processes=3)
    path.write_text(s.to_yaml())
    text = slurm_script(s, spec_path=path, nodes=4, gpus_per_node=8, partition="gpu", time="1-12:00:00")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert {"#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
            "#SBATCH --partition=gpu", "#SBATCH --time=1-12:00:00", "#SBATCH --job-name=dus-big"} <= set(lines)
    assert f"export DUS_SPEC='{path.resolve()}'" in lines  # quoted: the path has a space
    assert 'MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)' in lines
    assert "MAIN_PORT=29500" in text and f"export DUS_WORKSPACE={workspace.resolve()}" in lines
    srun = text[text.index("srun "):]
    for part in ['--machine-rank "$SLURM_NODEID"', '--num-machines "$SLURM_NNODES"', '--main-process-ip "$MAIN_IP"',
                 "-m backend run", "--num-processes 8'"]:  # 8 GPUs: 8 processes per node
        assert part in srun, part
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    cpu = slurm_script(s, spec_path=path, nodes=2)
    assert "--gpus-per-node" not in cpu and "--partition" not in cpu and "--num-processes 3'" in cpu
    for bad, field in [(dict(time="4h"), "time"), (dict(partition="gpu; rm"), "partition"), (dict(nodes=0), "nodes"),
                       (dict(gpus_per_node=-1), "gpus_per_node")]:
        with pytest.raises(ValueError, match=field):
            slurm_script(s, spec_path=path, **bad)


def test_slurm_script_with_the_spec_inside_runs_each_node_with_its_rank(tmp_path, workspace):
    """The dashboard's script carries the spec; srun and scontrol are stand-ins, and the 'python' records its
    arguments, so what each node would run is checked without a cluster."""
    s = spec(name="embedded", num_machines=2, main_process_ip="ignored", learning_rate=3e-4)
    fake = tmp_path / "bin"
    fake.mkdir()
    py = _exe(fake / "python", '#!/bin/bash\necho "$SLURM_NODEID $*" >> "$CALLS"\n')
    text = slurm_script(s, nodes=2, gpus_per_node=4, python=str(py))
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    calls = tmp_path / "calls"
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", str(script)], check=True, timeout=30, env={**os.environ, **_slurm_env(fake),
                                                                       "CALLS": str(calls)})
    written = workspace.resolve() / "runs" / "slurm-77.yaml"
    assert load_spec(written) == s  # the heredoc wrote the spec unchanged
    common = f"-m backend run {written} --num-machines 2 --machine-rank {{}} --main-process-ip 127.0.0.1 " \
             f"--main-process-port 29500 --num-processes 4"
    assert sorted(calls.read_text().splitlines()) == [f"{r} " + common.format(r) for r in (0, 1)]


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _slurm_env(fake: Path) -> dict:
    """srun: one copy of the command per node with that node's SLURM_NODEID; scontrol: the node list's hosts."""
    _exe(fake / "srun", '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\npids=()\n'
                        'for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done\n'
                        'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc\n')
    _exe(fake / "scontrol", '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && printf "127.0.0.1\\n127.0.0.2\\n"\n')
    return {"PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "77", "SLURM_NNODES": "2",
            "SLURM_JOB_NODELIST": "node[1-2]"}


# --- two machines on localhost, for real

def test_two_machines_train_register_once_and_resume_through_slurm(tiny_llama, workspace, tmp_path):
    registry.import_folder(tiny_llama, "tiny")
    port = free_port()
    common = ["train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", *TINY, "--name", "mm",
              "--keep-checkpoints", "--num-machines", "2", "--main-process-ip", "127.0.0.1",
              "--main-process-port", str(port)]
    rank1 = cli(*common, "--machine-rank", "1")  # machine 1 first: it waits for machine 0 at the rendezvous
    out0, out1 = finish([cli(*common, "--machine-rank", "0"), rank1])

    rows = {r.name: r for r in registry.list_models()}
    assert set(rows) == {"tiny", "mm"}  # registered once, by machine 0
    assert "registered mm" in out0 and "registered" not in out1 and "model:" not in out1  # none: no line
    run_dir = Path(next(ln.split(": ", 1)[1] for ln in out0.splitlines() if ln.startswith("run_dir: ")))
    assert f"run_dir: {run_dir}" in out1  # both machines used the same folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4  # both machines joined one process group
    # 36 training rows / (2 per device x 2 processes) = 9 steps per epoch; one process alone would take 18
    assert abs(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] - 4 / 9) < 1e-3
    steps = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert steps == [1, 2, 3, 4]  # logged by global rank 0 only
    before, after = load_state(tiny_llama), load_state(Path(rows["mm"].path))
    assert sum(not before[k].equal(after[k]) for k in before) > 10
    assert (run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()

    # The same training continued to 6 steps through the Slurm script (srun/scontrol stand-ins), in the first
    # run's folder: it resumes from checkpoint-4 and registers once more, under a new name.
    more = spec(**{"max_steps": 6, "save_steps": 2, "eval_steps": 2, "batch_size": 2, "max_length": 64,
                   "max_rows": 40, "learning_rate": 1e-3, "name": "mm-more", "main_process_port": free_port()})
    spec_file = tmp_path / "more.yaml"
    spec_file.write_text(more.to_yaml())
    script = tmp_path / "more.sbatch"
    # the script `python -m backend slurm` prints, printed in this process (a process of its own cost a start)
    printed = here("slurm", str(spec_file), "--nodes", "2")
    assert printed.returncode == 0, printed.stderr  # as check=True asked of the process
    script.write_text(printed.stdout)
    fake = tmp_path / "bin"
    fake.mkdir()
    job = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, **_slurm_env(fake), "DUS_RUN_NAME": run_dir.name})
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    log = job.stdout + job.stderr
    assert log.count("registered mm-more") == 1 and "machine 1 of 2 done" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["global_step"], summary["resumed_from"], summary["world_size"]) == (6, "checkpoint-4", 2)
    assert {r.name for r in registry.list_models()} == {"tiny", "mm", "mm-more"}
    assert not (run_dir / "checkpoints").exists()  # finished without keep_checkpoints: removed


# --- the training page

def test_train_page_shows_the_slurm_script_and_queues_machine_0(tiny_llama):
    from streamlit.testing.v1 import AppTest

    registry.import_folder(tiny_llama, "tiny")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/train.py").run()
    at.text_input(key="slurm_partition").set_value("gpu").run()
    at.number_input(key="slurm_gpus").set_value(8).run()
    script = next(c.value for c in at.code if c.value.startswith("#!/bin/bash"))
    assert "#SBATCH --nodes=2" in script and "#SBATCH --partition=gpu" in script and "--num-processes 8'" in script
    assert "kind: cpt" in script  # the spec travels inside the script
    assert any("does not submit it" in c.value for c in at.caption)
    assert "Download the Slurm script" in [b.proto.label for b in at.get("download_button")]
    at.number_input(key="num_machines").set_value(2).run()
    assert any("main_process_ip" in e.value for e in at.error)  # machine 0's address is needed
    at.text_input(key="main_process_ip").set_value("10.0.0.5").run()
    assert any("--machine-rank 1" in c.value for c in at.code)  # what the other machine runs
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    assert (job.spec["num_machines"], job.spec["machine_rank"], job.spec["main_process_ip"]) == (2, 0, "10.0.0.5")
