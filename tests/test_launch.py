"""Launchers and `sinks-jax sweep --print`: argument handling and the commands they print."""

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


def test_local_dry_run_prints_one_command_per_process():
    out = run(
        [
            "bash",
            "launch/local.sh",
            "-n",
            "3",
            "--one-gpu-each",
            "--dry-run",
            "--",
            "sinks-jax",
            "train",
            "--config",
            "configs/quickstart.py:32",
            "--workdir",
            "runs/x",
        ]
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        words = shlex.split(line)
        assert words[0] == "env"
        assert f"JAX_PROCESS_ID={i}" in words and "JAX_NUM_PROCESSES=3" in words
        assert f"CUDA_VISIBLE_DEVICES={i}" in words
        assert "JAX_COORDINATOR_ADDRESS=localhost:12355" in words
        assert words[-6:] == [
            "sinks-jax",
            "train",
            "--config",
            "configs/quickstart.py:32",
            "--workdir",
            "runs/x",
        ]


def test_local_single_process_runs_the_command_and_rejects_bad_input():
    out = run(["bash", "launch/local.sh", "--", "echo", "hello"])
    assert out.returncode == 0 and out.stdout.strip() == "hello"
    assert run(["bash", "launch/local.sh"]).returncode == 2
    bad = run(["bash", "launch/local.sh", "-n", "zero", "--", "echo"])
    assert bad.returncode == 2 and "-n zero" in bad.stderr


def test_tpu_pod_dry_run_prints_gcloud_ssh_to_all_workers():
    out = run(
        [
            "bash",
            "launch/tpu_pod.sh",
            "my-tpu",
            "us-east5-a",
            "--project",
            "proj",
            "--dry-run",
            "--",
            "sinks-jax",
            "train",
            "--workdir",
            "gs://b/r",
        ]
    )
    assert out.returncode == 0, out.stderr
    words = shlex.split(out.stdout)
    assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
    assert "--zone=us-east5-a" in words and "--worker=all" in words
    assert words[words.index("--project") + 1] == "proj"
    remote = next(w for w in words if w.startswith("--command="))
    assert "SINKS_JAX_DISTRIBUTED=1 sinks-jax train --workdir gs://b/r" in remote
    assert run(["bash", "launch/tpu_pod.sh", "only-name"]).returncode == 2
    assert run(["bash", "launch/tpu_pod.sh", "t", "z", "--"]).returncode == 2


def test_slurm_script_one_task_per_gpu_and_srun_command():
    with open(os.path.join(ROOT, "launch", "slurm_gpu.sbatch")) as f:
        text = f.read()
    tasks = re.search(r"#SBATCH --ntasks-per-node=(\d+)", text).group(1)
    gpus = re.search(r"#SBATCH --gpus-per-node=(\d+)", text).group(1)
    assert tasks == gpus
    out = run(
        ["bash", "launch/slurm_gpu.sbatch", "sinks-jax", "train", "--workdir", "w"],
        env={"DRY_RUN": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert shlex.split(out.stdout) == [
        "srun",
        "--kill-on-bad-exit=1",
        "sinks-jax",
        "train",
        "--workdir",
        "w",
    ]
    assert run(["bash", "launch/slurm_gpu.sbatch"]).returncode == 2


def test_sweep_print_lists_one_train_command_per_variant(capsys):
    from sinks_jax.train import sweep

    rc = sweep.main(
        [
            "configs/context_length.py:small",
            "--workdir",
            "runs/ctx",
            "--print",
            "--config.num_steps=10",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [shlex.split(x)[2] for x in lines] == [
        f"--config=configs/context_length.py:small,{t}" for t in (128, 256, 512, 1024, 2048)
    ]
    assert all(
        shlex.split(x)[3] == f"--workdir=runs/ctx/T{t}" and x.endswith("--config.num_steps=10")
        for x, t in zip(lines, (128, 256, 512, 1024, 2048))
    )
    with pytest.raises(SystemExit):
        sweep.main(["configs/context_length.py", "--workdir", "w", "--bogus"])
    assert sweep.main(["configs/missing.py", "--workdir", "w", "--print"]) == 2


def test_repro_script_plan_and_bad_input():
    import sys

    env = {"PYTHON": sys.executable, "PYTHONPATH": ROOT}
    out = run(["bash", "launch/repro_h200.sh", "--budget", "60", "--experiment", "depth",
               "--work", "w", "--dry-run"], env=env)
    assert out.returncode == 0, out.stderr
    lines = [shlex.split(x) for x in out.stdout.strip().splitlines()]
    assert [x[2] for x in lines] == [
        f"--config=configs/repro.py:experiment=depth,size=h200,layers={n}" for n in (4, 12, 24)]
    assert all("--config.data.source=prepared:w/prepared" in x for x in lines)
    assert all("--config.data.tokenizer=hf:w/bpe16384/tokenizer.json" in x for x in lines)
    assert [x[3] for x in lines] == [f"--workdir=w/depth/L{n}" for n in (4, 12, 24)]
    # By default the script makes the tokenizer and corpus where the config looks for them.
    default = run(["bash", "launch/repro_h200.sh", "--budget", "60", "--dry-run"], env=env)
    first = shlex.split(default.stdout.splitlines()[0])
    path = os.path.join(ROOT, "sinks_jax", "configs", "repro.py")
    spec = importlib.util.spec_from_file_location("repro", path)
    repro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repro)
    assert f"--config.data.source={repro.SOURCE}" in first
    assert f"--config.data.tokenizer={repro.TOKENIZER}" in first
    help_text = run(["bash", "launch/repro_h200.sh", "--help"]).stdout
    assert "--budget S" in help_text and "grain" in help_text
    for bad, message in ((["--dry-run"], "--budget SECONDS is required"),
                         (["--budget", "60", "--experiment", "width"], "choose context, depth"),
                         (["--budget", "60", "--gpus", "two"], "--gpus two")):
        res = run(["bash", "launch/repro_h200.sh", *bad], env=env)
        assert res.returncode == 2 and message in res.stderr, res.stderr


def test_multiprocess_dry_run_env_per_process_and_bad_input():
    cmd = ["sinks-jax", "train", "--workdir", "runs/x"]
    out = run(["bash", "launch/multiprocess.sh", "-n", "2", "--cpu-devices", "4", "--port", "999",
               "--dry-run", "--", *cmd], env={"XLA_FLAGS": "--xla_dump_to=/tmp/d"})
    assert out.returncode == 0, out.stderr
    lines = [shlex.split(x) for x in out.stdout.strip().splitlines()]
    assert len(lines) == 2
    for i, words in enumerate(lines):
        assert words[0] == "env" and words[-4:] == cmd
        assert {"JAX_COORDINATOR_ADDRESS=localhost:999", "JAX_NUM_PROCESSES=2",
                f"JAX_PROCESS_ID={i}", "JAX_PLATFORMS=cpu",
                "XLA_FLAGS=--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4"} <= set(words)
    gpu = run(["bash", "launch/multiprocess.sh", "-n", "2", "--one-gpu-each", "--dry-run", "--", "x"])
    assert [shlex.split(x)[4] for x in gpu.stdout.splitlines()] == [
        "CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"]
    port = shlex.split(gpu.stdout.splitlines()[0])[1]
    assert re.fullmatch(r"JAX_COORDINATOR_ADDRESS=localhost:\d+", port)  # a free port.
    for bad, message in ((["-n", "0", "--", "x"], "-n 0 is not a positive integer"),
                         (["--cpu-devices", "2", "--one-gpu-each", "--", "x"], "exclude each other"),
                         (["-n", "2"], "no command given"),
                         (["--bogus", "--", "x"], "unknown option --bogus")):
        res = run(["bash", "launch/multiprocess.sh", *bad])
        assert res.returncode == 2 and message in res.stderr, res.stderr


def test_multiprocess_failure_stops_the_others_and_signals_reach_each_once(tmp_path):
    # Process 1 fails at once; the others would wait for it forever: they get SIGTERM.
    script = ("import os, signal, sys, time\n"
              "got = []\n"
              "signal.signal(signal.SIGTERM, lambda s, f: got.append('TERM'))\n"
              "signal.signal(signal.SIGINT, lambda s, f: got.append('INT'))\n"
              "print('ready', flush=True)\n"
              "if os.environ['JAX_PROCESS_ID'] == os.environ.get('FAIL', ''): sys.exit(3)\n"
              "t = time.time()\n"
              "while not got and time.time() - t < 30: time.sleep(0.05)\n"
              "time.sleep(0.5)  # a second signal would be seen here.\n"
              "print(os.environ['JAX_PROCESS_ID'], got, flush=True)\n"
              "sys.exit(128 + 15 if got else 0)\n")
    def argv(logs):
        return ["bash", "launch/multiprocess.sh", "-n", "3", "--grace", "20", "--logs", str(logs),
                "--", sys.executable, "-c", script]

    start = time.monotonic()
    res = run(argv(tmp_path / "fail"), env={"FAIL": "1"})
    assert res.returncode == 3 and "status 3; stopping the others" in res.stderr
    assert time.monotonic() - start < 15
    for i in (0, 2):
        assert f"{i} ['TERM']" in (tmp_path / "fail" / f"process_{i}.log").read_text()

    # SIGTERM (or Ctrl-C) to the launcher reaches every process once.
    logs = tmp_path / "term"
    proc = subprocess.Popen(argv(logs), cwd=ROOT, env=dict(os.environ, FAIL=""))
    try:
        deadline = time.monotonic() + 30
        while not all((logs / f"process_{i}.log").exists()
                      and "ready" in (logs / f"process_{i}.log").read_text() for i in range(3)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + 15
    finally:
        proc.kill()
        proc.wait()
    for i in range(3):
        assert f"{i} ['TERM']" in (logs / f"process_{i}.log").read_text()


def test_multiprocess_processes_join_one_jax_run(tmp_path):
    """The variables the launcher sets are the ones `maybe_initialize_distributed` reads."""
    code = ("from sinks_jax.train import sharding; sharding.maybe_initialize_distributed(); "
            "import jax; print('joined', jax.process_index(), jax.process_count(), "
            "jax.device_count(), jax.local_device_count())")
    res = run(["bash", "launch/multiprocess.sh", "-n", "2", "--cpu-devices", "2", "--logs",
               str(tmp_path), "--", sys.executable, "-c", code],
              env={"PYTHON": sys.executable, "PYTHONPATH": ROOT})
    assert res.returncode == 0, res.stderr
    for i in range(2):
        assert f"joined {i} 2 4 2" in (tmp_path / f"process_{i}.log").read_text()
