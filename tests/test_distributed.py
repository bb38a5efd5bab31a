"""Several processes as one run (distributed.py), on localhost with one CPU device each.

The expected values are the same run in one process with two forced CPU devices: the same
mesh of two devices and the same program, with the sums between devices done by Gloo instead
of inside one process, so metrics agree to the rounding of those sums (tests/test_parallel.py
says why only the first iteration is compared across layouts).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import mimic_mjx
from mimic_mjx import distributed
from mimic_mjx.errors import MimicError

from test_parallel import KEYS, RTOL, _close, _forced

TINY = ["num_envs=16", "horizon=16", "network.policy_hidden=[32,32]", "network.value_hidden=[32,32]",
        "trpo.value_minibatches=4", "trpo.fvp_subsample=1", "checkpoint_every=2", "env.physics=native",
        "env.physics_threads=1", "iterations=3", "eval_every=3",
        "eval_rsi_episodes=0"]  # the t = 0 evaluation shows who evaluates; RSI would be another compile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_args(out, extra=()):
    sets = [a for item in TINY for a in ("--set", item)]
    return ["-m", "mimic_mjx", "train", "--config", "cpu_tiny", *sets, "--out", str(out), *extra]


def _one_device_env():
    # One CPU device per process (no forced count), mimic_mjx's CPU flags kept.
    return dict(os.environ, XLA_FLAGS=mimic_mjx.CPU_XLA_FLAGS.strip())


# ----------------------------------------------------------------- refusals, before JAX starts


def _args(**kw):
    """The flags `mimic-mjx train` parses, from keyword names (`process_id=1` -> `--process-id 1`)."""
    parser = argparse.ArgumentParser()
    distributed.add_arguments(parser)
    flags = []
    for name, value in kw.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(flags)


@pytest.fixture
def no_jax_env(monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)


def test_no_settings_is_one_process(no_jax_env, monkeypatch):
    assert not distributed.settings_from_args(_args()).enabled
    # JAX's coordinator variable alone (some clusters set it) does not ask for several processes.
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "node1:1234")
    assert not distributed.settings_from_args(_args()).enabled


def test_settings_come_from_flags_then_jax_variables(no_jax_env, monkeypatch):
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "node1:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "4")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "3")
    assert distributed.settings_from_args(_args()) == distributed.Settings("node1:1234", 4, 3)
    flags = _args(coordinator="node2:99", num_processes=2, process_id=1)
    assert distributed.settings_from_args(flags) == distributed.Settings("node2:99", 2, 1)
    auto = distributed.settings_from_args(_args(distributed=True)).auto
    assert auto is False  # the variables above already say everything
    monkeypatch.delenv(distributed.ENV_NUM_PROCESSES)
    monkeypatch.delenv(distributed.ENV_PROCESS_ID)
    assert distributed.settings_from_args(_args(distributed=True)).auto  # left to JAX's cluster detection


@pytest.mark.parametrize("kw, message", [
    (dict(coordinator="h:1", num_processes=2, process_id=2),
     "--process-id 2 is out of range for --num-processes 2 (0 .. 1)"),
    (dict(coordinator="h:1", num_processes=2, process_id=-1),
     "--process-id -1 is out of range for --num-processes 2 (0 .. 1)"),
    (dict(coordinator="h:1", num_processes=0, process_id=0), "--num-processes must be >= 1, got 0"),
    (dict(num_processes=2, process_id=0), "a multi-process run needs --coordinator, --num-processes and --process-id "
     "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); missing --coordinator"),
    (dict(coordinator="nodeport", num_processes=2, process_id=0),
     "--coordinator 'nodeport': expected HOST:PORT, e.g. node001:12355"),
    (dict(coordinator="h:1", num_processes=2, process_id=0, distributed_timeout="0"),
     "--distributed-timeout must be > 0 seconds, got 0"),
])
def test_bad_settings_are_one_line(no_jax_env, kw, message):
    with pytest.raises(MimicError) as err:
        distributed.settings_from_args(_args(**kw))
    assert str(err.value) == message


def test_an_unreachable_coordinator_is_one_line_within_the_timeout(no_jax_env):
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(MimicError, match=rf"^--coordinator localhost:{port}: nothing answered within 1.5 s"):
        distributed.wait_for_coordinator(f"localhost:{port}", 1.5)
    assert 1.5 <= time.monotonic() - start < 10


def test_the_cli_refuses_before_jax_starts(tmp_path):
    port = _free_port()
    out = subprocess.run([sys.executable, *_train_args(tmp_path / "run", ["--coordinator", f"localhost:{port}",
                                                                         "--num-processes", "2", "--process-id", "1",
                                                                         "--distributed-timeout", "2"])],
                         env=_one_device_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --coordinator localhost:{port}: nothing answered within 2 s")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------- two processes against two devices


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_processes_train_as_one_process_with_two_devices(tmp_path):
    port = _free_port()
    run = tmp_path / "two_processes"
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--distributed-timeout", "120"]
    procs = [subprocess.Popen([sys.executable, *_train_args(run, [*flags, "--process-id", str(i)])],
                              env=_one_device_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=1700) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    reference = _forced(_train_args(tmp_path / "two_devices", ["--set", "devices=2"]))
    assert reference.returncode == 0, reference.stderr[-3000:]

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "two_devices" / "metrics.jsonl").read_text().splitlines()]
    # Process 0 alone wrote the metrics: one line per iteration, not one per process.
    assert [r["training/iteration"] for r in rows] == [r["training/iteration"] for r in ref] == [1, 2, 3]
    assert not _close(rows[0], ref[0]), _close(rows[0], ref[0])
    assert set(KEYS) <= set(rows[0]) and RTOL <= 2e-2
    # Process 1 said who writes, and nothing else of the run; process 0 printed the progress.
    assert "process 1 of 2: training with the others; process 0 writes" in outs[1][0]
    assert "iter" not in outs[1][0] and "iter     3/3" in outs[0][0]
    # Both processes wrote the checkpoints together (orbax); the evaluation is process 0's.
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]
    assert len((run / "eval.jsonl").read_text().splitlines()) == 1 and (run / "best" / "meta.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_sweep_over_two_processes_scores_as_one_process(tmp_path):
    # 2 reward scales x 1 seed. Two processes keep the members whole and split each member's
    # environments over both (parallel.make_mesh); one process with 2 devices puts one member
    # on each device. Either way each member is its own run: the first iteration agrees.
    for name, extra in (("sweep", []), ("sweep_two_devices", ["devices=2"])):
        base = "".join(f"  - '{item}'\n" for item in TINY + extra if not item.startswith(("iterations", "eval_every")))
        (tmp_path / f"{name}.yaml").write_text(f"train: cpu_tiny\nset:\n{base}grid: {{reward.pose_scale: [2.0, 8.0]}}\n"
                                               "iterations: 2\neval_every: 2\n")

    def args(out, extra=(), name="sweep"):
        return ["-m", "mimic_mjx", "sweep", "--config", str(tmp_path / f"{name}.yaml"), "--out", str(out), *extra]

    port = _free_port()
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--distributed-timeout", "120"]
    procs = [subprocess.Popen([sys.executable, *args(tmp_path / "two_processes", [*flags, "--process-id", str(i)])],
                              env=_one_device_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=1700) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    reference = _forced(args(tmp_path / "two_devices", name="sweep_two_devices"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "2 members on 2 devices: members in 2 group(s) of devices" in reference.stdout
    assert "2 members on 2 devices: members in 1 group(s) of devices" in outs[0][0]

    def metrics(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    rows, ref = metrics(tmp_path / "two_processes"), metrics(tmp_path / "two_devices")
    # Process 0 alone wrote: one line per member per iteration.
    assert [(r["member"], r["training/iteration"]) for r in rows] == [
        (r["member"], r["training/iteration"]) for r in ref] == [(0, 1), (1, 1), (0, 2), (1, 2)]
    for a, b in zip(rows[:2], ref[:2]):
        assert not _close(a, b), _close(a, b)
    # The yardstick ran on process 0 with every member's policy: one line per member.
    evals = [json.loads(line) for line in (tmp_path / "two_processes" / "eval.jsonl").read_text().splitlines()]
    assert [e["member"] for e in evals] == [0, 1]
