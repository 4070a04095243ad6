"""The job templates, unmodified, on a real one-node SLURM (slurm/local_cluster.sh starts one).

Skipped, saying so, where no SLURM answers. Every wait is bounded."""
import os
import re
import shutil
import subprocess
import time

import pytest
from common import torch_load
from conftest import ROOT

# the real templates with tiny settings: small images, one epoch of two batches
TINY = {"PREPARE_ARGS": "--size 64 --augment-factor 2", "REGRESSOR_EPOCHS": "1", "COLORIZER_EPOCHS": "1",
        "REGRESSOR_ARGS": "--dry-run", "COLORIZER_ARGS": "--dry-run", "SBATCH_ARGS": "--time=00:10:00"}


# this test cluster's GPUs are fake GRES: say so, or every GPU job stops at once (it holds GPUs, and no
# CUDA answers: see test_gpu_job_without_cuda_stops_at_once)
FAKE_GPUS = {"COLORIZATION_FAKE_GPUS": "1"}


def slurm_answers():
    if not shutil.which("sbatch"):
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode == 0


pytestmark = pytest.mark.skipif(not slurm_answers(), reason="no SLURM here: start one with "
                                "`sudo slurm/local_cluster.sh start` to run the SLURM tests")


def run_driver(script, env):
    result = subprocess.run(["bash", f"slurm/{script}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PROJECT_DIR": str(ROOT), **FAKE_GPUS, **env})
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"([\w-]+)=(\d+)", result.stdout)), result.stdout


def sbatch(tmp_path, *args, fake_gpus=True):
    """sbatch as a user runs it from the project folder; -> (job id, the path of its log)."""
    env = {k: v for k, v in os.environ.items() if k not in FAKE_GPUS}
    job = subprocess.run(["sbatch", "--parsable", "--output", str(tmp_path / "job-%j.out"), *map(str, args)],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**env, "PROJECT_DIR": str(ROOT), **(FAKE_GPUS if fake_gpus else {})}).stdout.strip()
    return job, tmp_path / f"job-{job}.out"


def wait_for(job_ids, timeout=420):
    """Wait until none of the jobs is queued or running; -> {id: (name, state, start, end)}."""
    ids = ",".join(job_ids)
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-j", ids], capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", *job_ids])
            pytest.fail(f"jobs {ids} still queued or running after {timeout}s")
        time.sleep(1)
    time.sleep(1)  # the completion record is written just after the job leaves the queue
    out = subprocess.run(["sacct", "-c", "-j", ids, "-o", "JobID,JobName,State,Start,End", "-n", "-P"],
                         capture_output=True, text=True).stdout
    records = {}
    for line in out.splitlines():  # job ids restart with a fresh cluster: the last record is this one
        job, name, state, start, end = line.split("|")
        records[job] = (name, state.split()[0], start, end)
    return records


def job_request(job):
    """-> (partition, whether it asks for a GPU) of a job still known to the controller."""
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return re.search(r"Partition=(\S+)", shown).group(1), "gres:gpu" in shown


def test_pipeline_completes_in_dependency_order(photo_folder, tmp_path):
    run_dir = tmp_path / "pipeline"
    jobs, out = run_driver("pipeline.sh", {**TINY, "RUN_DIR": str(run_dir), "DATA_SOURCE": str(photo_folder)})
    assert set(jobs) == {"prepare", "regressor", "colorizer", "evaluate"}, out
    asked = {step: job_request(job) for step, job in jobs.items()}
    # prepare asks for no GPU and waits in the cluster's default (CPU) partition; the others hold one
    assert asked["prepare"] == ("debug", False), asked
    assert all(asked[step] == ("gpu", True) for step in ("regressor", "colorizer", "evaluate")), asked
    records = wait_for(list(jobs.values()))
    state = {step: records[jobs[step]] for step in jobs}
    assert {s: r[1] for s, r in state.items()} == dict.fromkeys(jobs, "COMPLETED"), \
        {s: (r[1], (run_dir / "logs").glob("*")) for s, r in state.items()}
    start, end = {s: r[2] for s, r in state.items()}, {s: r[3] for s, r in state.items()}
    assert end["prepare"] <= start["regressor"] and end["prepare"] <= start["colorizer"]
    assert max(end["regressor"], end["colorizer"]) <= start["evaluate"]
    assert (run_dir / "report" / "report.md").is_file() and (run_dir / "report" / "metrics.json").is_file()
    assert str(run_dir / "report" / "report.md") in out


def test_failed_step_cancels_its_dependents(tmp_path):
    jobs, _ = run_driver("pipeline.sh", {**TINY, "RUN_DIR": str(tmp_path / "run"),
                                         "DATA_SOURCE": str(tmp_path / "no-such-folder")})
    records = wait_for(list(jobs.values()), timeout=120)
    states = {step: records[jobs[step]][1] for step in jobs}
    assert states == {"prepare": "FAILED", "regressor": "CANCELLED", "colorizer": "CANCELLED",
                      "evaluate": "CANCELLED"}
    log = next((tmp_path / "run" / "logs").glob("prepare-*.out")).read_text()
    assert "no-such-folder: no such folder" in log


def test_sweep_array_and_its_tables(photo_folder, tmp_path):
    run_dir = tmp_path / "sweep"
    jobs, _ = run_driver("sweep.sh", {**TINY, "RUN_DIR": str(run_dir), "DATA_SOURCE": str(photo_folder)})
    records = wait_for(list(jobs.values()), timeout=600)
    for step in ("prepare", "array", "evaluate-activation", "evaluate-capacity"):
        assert records[jobs[step]][1] == "COMPLETED", (step, records)
    activation = (run_dir / "activation" / "report" / "report.md").read_text()
    capacity = (run_dir / "capacity" / "report" / "report.md").read_text()
    for name in ("relu:", "sigmoid:", "tanh:"):
        assert name in activation
    for name in ("c128-l3", "c256-l3", "c512-l3", "c128-l5", "c256-l5", "c512-l5", "c64-l5"):
        assert f"| {name}: seed" in capacity


def test_signal_before_time_limit_checkpoints_requeues_and_resumes(prepared, tmp_path):
    out = tmp_path / "run"
    # 12 short epochs (4 batches each): the signal lands after the first one, with the run well short of its end
    job = subprocess.run(["sbatch", "--parsable", "--output", str(tmp_path / "job-%j.out"), "--open-mode=append",
                          "slurm/colorizer.sbatch", "--data", str(prepared), "--out", str(out), "--epochs", "12",
                          "--epoch-length", "4", "--batch-size", "2"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PROJECT_DIR": str(ROOT), **FAKE_GPUS}).stdout.strip()
    deadline = time.monotonic() + 180
    while not (out / "history.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # what --signal=B:USR1@180 does near the time limit: signal the batch shell
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    # SLURM holds a requeued job for 120 s (its begin time); a cluster's policy, not the template's: start it
    # sooner, but only once the node has let go of the first run (the job is PENDING, no longer COMPLETING) and
    # the clock has passed that second: the node refuses a credential issued in or before the second it revoked
    # the first run's one ("Job credential revoked"), and the job then fails without running again
    deadline = time.monotonic() + 120
    while subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True,
                         text=True).stdout.strip() != "PENDING BeginTime" and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.1)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    # between its two runs a requeued job can be missing from squeue for a moment: wait for the second to speak
    log_path, deadline = tmp_path / f"job-{job}.out", time.monotonic() + 180
    while "resuming" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    records = wait_for([job], timeout=300)
    log = log_path.read_text()
    assert "requeueing job" in log and "resuming" in log, (log, records.get(job))
    assert records[job][1] == "COMPLETED", log
    history = torch_load(out / "last.pt")["run"]["history"]
    assert history["epoch"] == list(range(1, 13))


def test_two_processes_under_srun_write_one_checkpoint(prepared, tmp_path):
    out = tmp_path / "ddp"
    job = subprocess.run(["sbatch", "--parsable", "--ntasks-per-node=2", "--output", str(tmp_path / "ddp-%j.out"),
                          "slurm/multigpu.sbatch", "--data", str(prepared), "--out", str(out), "--epochs", "2",
                          "--batch-size", "16"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PROJECT_DIR": str(ROOT), **FAKE_GPUS}).stdout.strip()
    records = wait_for([job], timeout=300)
    log = (tmp_path / f"ddp-{job}.out").read_text()
    assert records[job][1] == "COMPLETED", log
    assert "in 2 processes" in log
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]


def test_the_multi_node_template_is_one_run_on_hpg_ai(prepared, tmp_path):
    """slurm/multinode.sbatch asks for hpg-ai and several nodes; here (one node) its body runs with
    those options overridden on the command line, as one run of two processes."""
    template = (ROOT / "slurm" / "multinode.sbatch").read_text()
    assert "#SBATCH --partition=hpg-ai" in template and "#SBATCH --nodes=2" in template
    out = tmp_path / "multinode"
    job = subprocess.run(["sbatch", "--parsable", "--partition=gpu", "--nodes=1", "--ntasks-per-node=2", "--mem=0",
                          "--output", str(tmp_path / "mn-%j.out"), "slurm/multinode.sbatch", "--data", str(prepared),
                          "--out", str(out), "--epochs", "1", "--batch-size", "16"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PROJECT_DIR": str(ROOT), **FAKE_GPUS}).stdout.strip()
    records = wait_for([job], timeout=300)
    log = (tmp_path / f"mn-{job}.out").read_text()
    assert records[job][1] == "COMPLETED", log
    assert "in 2 processes" in log and torch_load(out / "best.pt")["run"]["config"]["world_size"] == 2


def test_gpu_job_without_cuda_stops_at_once(prepared, tmp_path):
    """A job that holds GPUs never trains on the CPU: without CUDA (here: fake GRES, not declared fake) it
    fails before any work with one line saying what it found and what to do."""
    job, log_path = sbatch(tmp_path, "slurm/colorizer.sbatch", "--data", prepared, "--out", tmp_path / "run",
                           fake_gpus=False)
    records = wait_for([job], timeout=180)
    log = log_path.read_text()
    assert records[job][1] == "FAILED", log
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "SLURM_JOB_GPUS=" in errors[0] and "no CUDA GPU answers" in errors[0], log
    assert "--device cpu" in errors[0] and "TORCH_CUDA=" in errors[0]
    assert "Traceback" not in log and not (tmp_path / "run").exists()


def test_a_training_template_with_two_tasks_is_one_run_of_world_size_two(prepared, tmp_path):
    """sbatch --ntasks=2 of a one-GPU template, default flags: srun starts both tasks, --backend auto joins them."""
    out = tmp_path / "run"
    job, log_path = sbatch(tmp_path, "--ntasks=2", "slurm/colorizer.sbatch", "--data", prepared, "--out", out,
                           "--epochs", 2, "--batch-size", 16)
    records = wait_for([job], timeout=300)
    log = log_path.read_text()
    assert records[job][1] == "COMPLETED", log
    assert log.count("training on cpu in 2 processes") == 1, log  # rank 0 speaks for the run
    config = torch_load(out / "best.pt")["run"]["config"]
    assert config["world_size"] == 2 and config["backend"] == "auto"
    assert torch_load(out / "last.pt")["run"]["history"]["epoch"] == [1, 2]


@pytest.mark.parametrize("fake", [True, False])
def test_preflight_reports_and_fails_a_gpu_job_without_a_real_gpu(tmp_path, fake):
    job, log_path = sbatch(tmp_path, "--ntasks=2", "slurm/check.sbatch", fake_gpus=fake)
    records = wait_for([job], timeout=300)
    log = log_path.read_text()
    assert "SLURM: SLURM_JOB_ID=" in log and "torch " in log and "NVIDIA: " in log, log
    if fake:
        assert records[job][1] == "COMPLETED", log
        for line in ("NO REAL GPU", "one training step each", "U-Net 8x4 classify",
                     "all_reduce across 2 tasks (gloo): OK", "colorize: OK", "preflight OK"):
            assert line in log, (line, log)
    else:
        assert records[job][1] == "FAILED", log
        failures = [line for line in log.splitlines() if line.startswith("preflight FAILED: ")]
        assert failures and "no CUDA GPU answers" in failures[0] and "Traceback" not in log, log
