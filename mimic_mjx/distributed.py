"""Several processes, one per host, as one run: JAX's own `jax.distributed`, nothing home-made.

Every process runs the same program over a mesh of every process's devices (parallel.py): the
environment batch is split over all of them and XLA's collectives (Gloo on CPUs, NCCL on GPUs)
reduce over the global batch. Process 0 alone writes the run directory (config, metrics,
evaluations, `best/`); orbax checkpoints are written by all of them together, so `--out` must
be a filesystem every host sees.

The settings come from flags, else from `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
`JAX_PROCESS_ID`, else (with `--distributed` alone) from the cluster as
`jax.distributed.initialize` detects it (SLURM, Open MPI). Bad settings are refused in one
line before JAX starts: a process id out of range, a coordinator that does not answer within
the timeout (docs/notes/scale_out.md: JAX itself would abort the process, exit 134, after its
own timeout, with no message a user can act on).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

import jax
import numpy as np

from mimic_mjx.errors import MimicError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed.initialize itself
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
DEFAULT_TIMEOUT_S = 60.0
# How long a process waits at a barrier for the others: one compile or one periodic
# evaluation of the slowest process (minutes on a CPU), with room to spare.
BARRIER_TIMEOUT_S = 3600


@dataclasses.dataclass(frozen=True)
class Settings:
    """How this process joins a multi-process run; `auto`: let JAX detect the cluster."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    auto: bool = False

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator is not None or self.num_processes is not None


def add_arguments(parser) -> None:
    """The `jax.distributed` flags of `mimic-mjx train` and `sweep`."""
    group = parser.add_argument_group(
        "several processes (jax.distributed; every process runs the same command, process 0 writes --out)")
    group.add_argument("--distributed", action="store_true",
                       help="join a multi-process run; without the flags below the settings come from "
                            f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID} or the cluster "
                            "(SLURM, Open MPI) as jax.distributed.initialize detects it")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help=f"process 0's address and a free port (default: ${ENV_COORDINATOR})")
    group.add_argument("--num-processes", type=int, default=None, metavar="N",
                       help=f"processes in the run (default: ${ENV_NUM_PROCESSES})")
    group.add_argument("--process-id", type=int, default=None, metavar="I",
                       help=f"this process's id, 0 .. N-1 (default: ${ENV_PROCESS_ID})")
    group.add_argument("--distributed-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for the coordinator and the other processes (default: {DEFAULT_TIMEOUT_S:g})")


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise MimicError(f"{name}={text!r}: expected an integer") from None


def settings_from_args(args) -> Settings:
    """Flags first, then JAX's environment variables; checked (MimicError) before JAX starts."""
    coordinator = getattr(args, "coordinator", None) or os.environ.get(ENV_COORDINATOR) or None
    num = getattr(args, "num_processes", None)
    num = _env_int(ENV_NUM_PROCESSES) if num is None else num
    pid = getattr(args, "process_id", None)
    pid = _env_int(ENV_PROCESS_ID) if pid is None else pid
    timeout = getattr(args, "distributed_timeout", DEFAULT_TIMEOUT_S)
    auto = bool(getattr(args, "distributed", False))
    # JAX_COORDINATOR_ADDRESS alone (no count) is not a request to run several processes.
    explicit = num is not None or pid is not None or getattr(args, "coordinator", None) is not None
    settings = Settings(coordinator if (explicit or auto) else None, num, pid, timeout,
                        auto and not explicit)
    check(settings)
    return settings


def check(settings: Settings) -> None:
    """Refuse settings that cannot make a run, in one line naming the flag."""
    if not settings.timeout_s > 0:
        raise MimicError(f"--distributed-timeout must be > 0 seconds, got {settings.timeout_s:g}")
    if not settings.enabled or settings.auto:
        return
    missing = [flag for flag, value in (("--coordinator", settings.coordinator),
                                        ("--num-processes", settings.num_processes),
                                        ("--process-id", settings.process_id)) if value is None]
    if missing:
        raise MimicError(f"a multi-process run needs --coordinator, --num-processes and --process-id "
                         f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing {', '.join(missing)}")
    if settings.num_processes < 1:
        raise MimicError(f"--num-processes must be >= 1, got {settings.num_processes}")
    if not 0 <= settings.process_id < settings.num_processes:
        raise MimicError(f"--process-id {settings.process_id} is out of range for --num-processes "
                         f"{settings.num_processes} (0 .. {settings.num_processes - 1})")
    host_port(settings.coordinator)


def host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MimicError(f"--coordinator {address!r}: expected HOST:PORT, e.g. node001:12355")
    return host.strip("[]"), int(port)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Return once something accepts TCP connections at `address`; MimicError after `timeout_s`."""
    host, port = host_port(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise MimicError(f"--coordinator {address}: nothing answered within {timeout_s:g} s ({err.strerror or err}); "
                                 "start process 0 first, or check the address, the port and the firewall") from None
            time.sleep(0.5)


def initialize(settings: Settings) -> None:
    """`jax.distributed.initialize` from `settings` (nothing when not enabled); call it before
    anything asks JAX for its devices."""
    if not settings.enabled:
        return
    if settings.auto:
        jax.distributed.initialize(initialization_timeout=int(max(1, settings.timeout_s)))
        return
    if settings.num_processes == 1:
        return  # one process: nothing to coordinate
    if settings.process_id != 0:
        wait_for_coordinator(settings.coordinator, settings.timeout_s)
    jax.distributed.initialize(coordinator_address=settings.coordinator, num_processes=settings.num_processes,
                               process_id=settings.process_id,
                               initialization_timeout=int(max(1, settings.timeout_s)))


def is_writer() -> bool:
    """Whether this process writes the run directory (process 0 of a multi-process run)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches `name` (a unique name per call), through the
    coordination service's barrier, not a collective: Gloo gives up on a first collective
    whose peers arrive more than 30 s apart (measured: "Gloo context initialization failed:
    DEADLINE_EXCEEDED"), and processes reach the first step minutes apart when one compiles
    slower, and the next step apart by process 0's periodic evaluation. (orbax's
    `sync_global_processes` is a collective in this version; its `get_barrier_sync_fn` is the
    coordination service's `wait_at_barrier`.)"""
    if jax.process_count() == 1:
        return
    import orbax.checkpoint as ocp

    ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=BARRIER_TIMEOUT_S * 1000)


def agree(flag: bool) -> bool:
    """Process 0's `flag` in every process, so a decision taken on one clock (the time limit)
    is taken at the same iteration everywhere; one small collective when there are several."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def check_devices(devices: int) -> None:
    """A multi-process run spans every process's devices: `devices` must be 0 or all of them."""
    if jax.process_count() > 1 and devices not in (0, jax.device_count()):
        raise MimicError(f"devices = {devices}, but a run of {jax.process_count()} processes spans all "
                         f"{jax.device_count()} devices; use devices=0")
