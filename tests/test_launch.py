"""Launchers and `sinks-jax sweep --print`: argument handling and the commands they print."""

import importlib.util
import os
import re
import shlex
import subprocess

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
    spec = importlib.util.spec_from_file_location("repro", os.path.join(ROOT, "configs", "repro.py"))
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
