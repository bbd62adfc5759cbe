"""Two JAX processes on this machine, 4 fake CPU devices each, joined by
`jax.distributed.initialize` over localhost: the multi-host code paths (process-sharded
loading, cross-process reductions, checkpoints written by several processes, metrics written
once) against the single-process run on 8 devices.

The workers are this file run as a script (`python tests/test_multiprocess.py step OUT ...`),
or `sinks-jax train` itself. Every worker is killed when its test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
import test_train  # its model and float32 tolerances
from flax import nnx
from jax.experimental import multihost_utils

from sinks_jax.data.loader import make_loader
from sinks_jax.model import Transformer
from sinks_jax.train import sharding
from sinks_jax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES, LOCAL_DEVICES = 2, 4
T, GLOBAL_ROWS = 16, 8  # one step: 8 rows of 16 tokens, 4 per process.


# ------------------------------------------------------------------------- processes

# Each process compiles its steps once and runs them on a tiny model: LLVM's optimisation
# level 0 compiles several times faster here, and float32 arithmetic stays IEEE either way.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(
    cpu_devices: int = 0, gpus: str | None = None, distributed: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker with `cpu_devices` fake CPU devices, or the GPUs `gpus`
    ("0,1"); `distributed`: the variables launch/multiprocess.sh sets, None for one process."""
    drop = (
        "JAX_PLATFORMS",
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "XLA_FLAGS",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    if gpus is None:
        env.update(
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={cpu_devices} {FAST_COMPILE}",
        )
    else:  # float32 matmuls in float32 (not TF32); memory as needed (the test holds some).
        env.update(
            CUDA_VISIBLE_DEVICES=gpus,
            JAX_DEFAULT_MATMUL_PRECISION="highest",
            XLA_PYTHON_CLIENT_PREALLOCATE="false",
        )
    env.update(distributed or {})
    return env


def two_process_envs(gpus: bool = False) -> list[dict[str, str]]:
    """Processes 0 and 1 of one run: 4 fake CPU devices each, or GPU i for process i."""
    address = f"localhost:{free_port()}"
    return [
        process_env(
            LOCAL_DEVICES,
            str(i) if gpus else None,
            {
                "JAX_COORDINATOR_ADDRESS": address,
                "JAX_NUM_PROCESSES": str(NUM_PROCESSES),
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(NUM_PROCESSES)
    ]


@contextlib.contextmanager
def processes(argv: list[str], envs: list[dict[str, str]], log_dir):
    """Start `argv` once per environment (output in LOG_DIR/process_i.log); on leaving, kill
    whichever still runs."""
    os.makedirs(log_dir, exist_ok=True)
    procs = []
    try:
        for i, env in enumerate(envs):
            with open(os.path.join(log_dir, f"process_{i}.log"), "w") as log:
                procs.append(
                    subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()


def wait_all(procs, timeout: float, *log_dirs) -> list[int]:
    """Exit statuses of `procs`, waiting at most `timeout` seconds in all; fails with their
    logs on a timeout."""
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"processes still running after {timeout} s:\n{logs(*log_dirs)}")
    return codes


def logs(*log_dirs) -> str:
    """The last lines each process wrote (without gloo's connection messages)."""
    out = []
    for name in sorted(os.path.join(d, n) for d in log_dirs for n in os.listdir(d)):
        with open(name) as f:
            lines = [ln for ln in f.read().splitlines() if "[Gloo]" not in ln]
        out.append(f"--- {name}:\n" + "\n".join(lines[-30:]))
    return "\n".join(out)


# ------------------------------------------------------------------- one train step


def write_corpus(path) -> str:
    """A small text corpus (a finite source: rows shuffled by the loader)."""
    rng = np.random.default_rng(0)
    words = ["sink", "token", "first", "attention", "row", "the", "of", "a"]
    docs = [" ".join(rng.choice(words, rng.integers(4, 30))) for _ in range(40)]
    with open(path, "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    return f"text:{path}"


def load_rows(source: str) -> dict[str, np.ndarray]:
    """This process's rows of the first train batch of `source` (the loader takes the
    process index and count from jax)."""
    loader = make_loader(
        source,
        tokenizer="byte",
        seq_len=T,
        batch_size=GLOBAL_ROWS,
        packing="concat_bos",
        seed=5,
        split="train",
        progress=False,
    )
    return next(loader)


def model_cfg():
    return test_train.CFG.replace(vocab_size=259)  # the byte tokenizer's vocabulary.


def initial_params() -> dict:
    """Parameters of model_cfg() drawn with numpy (no compilation): N(0, 0.02) weights,
    norm scales near 1."""
    abstract = nnx.eval_shape(lambda: Transformer(model_cfg(), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        noise = rng.normal(0.0, 0.02, leaf.shape).astype(np.float32)
        return noise + 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else noise

    return jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(nnx.split(abstract)[1]))


def sgd_step(mesh, batch_BxT, params):
    """Parameters (whole, on the host) and metrics after one optax.sgd(1.0) train step with
    sink statistics on `mesh`, from this process's rows `batch_BxT` (with one process: all)."""
    tx = optax.sgd(1.0)
    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg(), rngs=nnx.Rngs(0))))[0]
    p_shard = sharding.tree_shardings(mesh, params)
    o_shard = sharding.tree_shardings(mesh, jax.eval_shape(tx.init, params))
    p = jax.device_put(params, p_shard)  # the same values on every process.
    o = jax.jit(tx.init, out_shardings=o_shard)(p)
    b_shard = sharding.batch_sharding(mesh, accumulate=True)
    fn = step_lib.make_train_step(
        graphdef,
        tx,
        param_shardings=p_shard,
        opt_shardings=o_shard,
        batch_sharding=b_shard,
        replicated=sharding.replicated(mesh),
        use_segments=False,
        sink_stats=True,
    )
    batch = sharding.global_batch({k: v[None] for k, v in batch_BxT.items()}, b_shard)
    p, _, metrics = fn(p, o, batch)
    return multihost_utils.process_allgather(p, tiled=True), jax.device_get(metrics)


def worker_step(out_dir: str, source: str, mesh: str) -> None:
    """One process of `compare_step` (or the one-process reference): its rows of the first
    batch, and one step on the mesh `mesh` ("DATA,FSDP") of all devices, written to
    OUT_DIR/process_<index>.npz."""
    sharding.maybe_initialize_distributed()
    data, fsdp = (int(x) for x in mesh.split(","))
    assert jax.device_count() == data * fsdp, jax.devices()
    rows = load_rows(source)  # this process's rows: process index and count from jax.
    p, m = sgd_step(sharding.make_mesh({"data": data, "fsdp": fsdp}), rows, initial_params())
    out = {f"rows_{k}": v for k, v in rows.items()}
    out.update({f"params/{i}": x for i, x in enumerate(jax.tree.leaves(p))})
    out.update({f"metrics/{k}": np.asarray(v) for k, v in m.items()})
    np.savez(os.path.join(out_dir, f"process_{jax.process_index()}.npz"), **out)


def compare_step(tmp_path, two_envs, one_env, mesh: str) -> None:
    """Runs `worker_step` as two processes and as one, and checks that each process loaded its
    own half of the global batch and that the step both took equals the one-process step."""
    source = write_corpus(tmp_path / "docs.jsonl")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    worker = [sys.executable, __file__, "step"]
    with (
        processes(
            [*worker, str(tmp_path / "two"), source, mesh], two_envs, tmp_path / "logs_two"
        ) as two,
        processes(
            [*worker, str(tmp_path / "one"), source, mesh], [one_env], tmp_path / "logs_one"
        ) as one,
    ):
        codes = wait_all([*two, *one], 240, tmp_path / "logs_two", tmp_path / "logs_one")
    assert codes == [0, 0, 0], logs(tmp_path / "logs_two", tmp_path / "logs_one")
    outs = [dict(np.load(tmp_path / "two" / f"process_{i}.npz")) for i in range(NUM_PROCESSES)]
    ref = dict(np.load(tmp_path / "one" / "process_0.npz"))

    # Data: process p holds rows [4p, 4p + 4) of the one-process batch: together all of them,
    # each once; no row of one process is a row of the other.
    half = GLOBAL_ROWS // NUM_PROCESSES
    for k in ("tokens", "targets", "segment_ids", "positions", "loss_mask"):
        whole = ref[f"rows_{k}"]
        assert whole.shape == (GLOBAL_ROWS, T)
        for p, out in enumerate(outs):
            np.testing.assert_array_equal(out[f"rows_{k}"], whole[p * half : (p + 1) * half])
    rows = [{tuple(r) for r in out["rows_tokens"]} for out in outs]
    assert len(rows[0]) == len(rows[1]) == half and not rows[0] & rows[1]

    # The step, with the tolerances of tests/test_train.py: the cross-process reductions sum
    # the same float32 terms in another order.
    params = initial_params()
    treedef = jax.tree.structure(params)

    def params_of(out):
        return jax.tree.unflatten(treedef, [out[f"params/{i}"] for i in range(treedef.num_leaves)])

    for out in outs:  # every process holds the whole result.
        test_train._assert_same_gradients(params, params_of(ref), params_of(out))
        np.testing.assert_allclose(out["metrics/loss"], ref["metrics/loss"], rtol=1e-5)
        np.testing.assert_allclose(out["metrics/grad_norm"], ref["metrics/grad_norm"], rtol=1e-4)
        assert out["metrics/loss_tokens"] == ref["metrics/loss_tokens"] > 0
        np.testing.assert_allclose(out["metrics/sink_attn"], ref["metrics/sink_attn"], atol=1e-5)
        for eps in step_lib.SINK_EPS:
            np.testing.assert_allclose(
                out[f"metrics/sink_rate_{eps}"], ref[f"metrics/sink_rate_{eps}"], atol=1e-6
            )


@pytest.mark.slow  # three JAX processes compile a train step (~40 s): the second CI stage.
def test_two_processes_step_equals_one_process(tmp_path):
    """Two processes of 4 CPU devices, mesh data 2 x fsdp 4 (parameters sharded across both
    processes; gradients, loss, norms and sink statistics reduced across them), against one
    process of 8 devices."""
    compare_step(tmp_path, two_process_envs(), process_env(8), "2,4")


@pytest.mark.gpu
def test_two_gpu_processes_step_equals_one_process(tmp_path):
    """The same with one GPU per process (NCCL between processes; mesh fsdp 2) against one
    process driving both GPUs."""
    # Counted without starting jax's GPU client here (it would take most of the memory).
    listed = (
        subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        if shutil.which("nvidia-smi")
        else ""
    )
    if listed.count("GPU ") < 2:
        pytest.skip("needs 2 CUDA GPUs")
    compare_step(tmp_path, two_process_envs(gpus=True), process_env(gpus="0,1"), "1,2")


# ------------------------------------------------------------ sinks-jax train, end to end

STEPS = 40
TRAIN = [
    "-m",
    "sinks_jax.cli",
    "train",
    "--config",
    "configs/context_length.py:tiny,32",
    f"--config.num_steps={STEPS}",
    "--config.micro_batch_size=16",  # 16 rows of 32 tokens a step, one micro-batch.
    "--config.sink_stats_every=1",  # in-step sink statistics at every step.
    "--config.log_every=1",
    "--config.checkpoint_every=10",
    "--config.eval_every=1000",  # evaluated once, at the end.
    "--config.eval_bootstrap=10",
]


def rows_of(workdir) -> list[dict]:
    """metrics.jsonl's complete rows (the last line may be half written)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and its children (the launcher's processes run in their own groups)."""
    if proc.poll() is None:
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        proc.kill()
    proc.wait()


def params_of(workdir):
    from sinks_jax.train import checkpoint as ckpt_lib

    model, _ = ckpt_lib.load_model(str(workdir))
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))


@pytest.mark.slow  # four sinks-jax train processes and a restart: in the second CI stage
def test_two_process_training_preempted_and_resumed(tmp_path):
    """`sinks-jax train` as two processes: step 1 equals the one-process run (loss and sink
    statistics reduced across processes); metrics.jsonl and summary.json written once, by
    process 0; a SIGTERM to one process stops both after the same step with a checkpoint
    written by both, and the restarted pair finishes exactly as an uninterrupted pair."""
    python = [sys.executable, *TRAIN]
    full, part, one = tmp_path / "full", tmp_path / "part", tmp_path / "one"
    launcher = subprocess.Popen(
        [
            "bash",
            "launch/multiprocess.sh",
            "-n",
            "2",
            "--cpu-devices",
            "4",
            "--logs",
            str(tmp_path / "logs_full"),
            "--",
            *python,
            "--workdir",
            str(full),
        ],
        cwd=ROOT,
        env={**process_env(), "XLA_FLAGS": FAST_COMPILE, "PYTHON": sys.executable},
    )
    try:
        with (
            processes(
                [*python, "--workdir", str(one), "--config.num_steps=2"],
                [process_env(8)],
                tmp_path / "logs_one",
            ) as ref,
            processes(
                [*python, "--workdir", str(part)], two_process_envs(), tmp_path / "logs_part"
            ) as pair,
        ):
            # Preempt one process only, once both run steps: the other must stop with it.
            deadline = time.monotonic() + 300
            while not any(r["step"] >= 3 for r in rows_of(part)):
                assert time.monotonic() < deadline and pair[1].poll() is None, logs(
                    tmp_path / "logs_part"
                )
                time.sleep(0.05)
            pair[1].send_signal(signal.SIGTERM)
            codes = wait_all([*pair, *ref], 300, tmp_path / "logs_part", tmp_path / "logs_one")
            assert codes == [128 + signal.SIGTERM] * 2 + [0], logs(tmp_path / "logs_part")
        assert launcher.wait(timeout=300) == 0, logs(tmp_path / "logs_full")
    finally:
        kill_tree(launcher)

    stopped = json.loads((part / "summary.json").read_text())
    assert stopped["status"] == "preempted" and 3 <= stopped["step"] < STEPS, stopped
    assert (part / "checkpoints" / str(stopped["step"])).is_dir()
    with processes(
        [*python, "--workdir", str(part)], two_process_envs(), tmp_path / "logs_resumed"
    ) as pair:
        assert wait_all(pair, 300, tmp_path / "logs_resumed") == [0, 0], logs(
            tmp_path / "logs_resumed"
        )
    assert f"(step {stopped['step']})" in logs(tmp_path / "logs_resumed")

    # Written once, by process 0: every step's row once, the summary, the sink scores.
    for workdir in (full, part):
        rows = rows_of(workdir)
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
        assert all("sink_attn" in r for r in rows) and "val_loss" in rows[-1]
        summary = json.loads((workdir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["step"] == STEPS
        assert (workdir / "sink_scores.npz").is_file()

    # The resumed pair retraces the uninterrupted one: same layout, same arithmetic.
    for a, b in zip(rows_of(full), rows_of(part)):
        for k in ("loss", "grad_norm"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(params_of(full)), jax.tree.leaves(params_of(part))):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(
        json.loads((part / "summary.json").read_text())["val_loss"],
        json.loads((full / "summary.json").read_text())["val_loss"],
        atol=1e-6,
    )

    # Step 1 (the initial parameters, the same first batch) of the one-process 8-device run:
    # loss and sink statistics of the pair are reductions over both processes' rows (the
    # tolerances of tests/test_train.py: the same float32 terms summed in another order).
    first, ref = rows_of(full)[0], rows_of(one)[0]
    np.testing.assert_allclose(first["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(first["grad_norm"], ref["grad_norm"], rtol=1e-4)
    assert first["loss_tokens"] == ref["loss_tokens"] == 16 * 32
    np.testing.assert_allclose(first["sink_attn"], ref["sink_attn"], atol=1e-5)
    for eps in step_lib.SINK_EPS:
        np.testing.assert_allclose(first[f"sink_rate_{eps}"], ref[f"sink_rate_{eps}"], atol=1e-6)


if __name__ == "__main__":
    {"step": worker_step}[sys.argv[1]](*sys.argv[2:])
