"""Talk to `lockstep run` from a Python training script, standard library only.

Under `lockstep run`, each rank of a script that does not link lockstep's
C++ runtime can still be watched: it sends heartbeats (its step, step time
and metrics) to the launcher, which then detects hangs, names the rank that
failed, draws the status line and counts goodput, and it learns of
checkpoint and stop requests (SIGUSR1: checkpoint; SIGTERM or SIGUSR2:
checkpoint and stop, as a Slurm time limit or preemption sends them)::

    import lockstep_client as lockstep

    run = lockstep.connect()              # a no-op outside `lockstep run`
    for step in range(start, steps):
        loss = train_step()
        run.step(step, loss=loss)
        if run.should_checkpoint(step, every=50):
            save(step)
            run.checkpoint(step)
        if run.should_stop():
            break
    run.close()

`should_checkpoint` and `should_stop` decide alike on every rank: with
torch.distributed initialised, through one all-reduce of the ranks' flags;
without it, from the signals the launcher sends to every rank.

`init_torch_distributed()` starts torch.distributed from what the launcher
(mpirun or srun) tells each rank: its rank, the world size, and a rendezvous
address on rank 0's host.
"""

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

__all__ = ["Run", "connect", "rank_and_world", "init_torch_distributed"]

# How often the rank says it is alive between steps: the launcher counts a
# host whose ranks all stay silent for its host timeout (4 s) as lost.
_ALIVE_SECONDS = 1.0
# Heartbeats of steps closer together than this are not sent (the newest
# step goes with the next one); the launcher needs no more.
_MIN_STEP_INTERVAL = 0.1


def rank_and_world():
    """This process's rank and the world size, from the launcher's variables
    (Open MPI's, PMIx's, Slurm's or torchrun's); (0, 1) when none is set."""
    for rank_name, size_name in (
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
        ("RANK", "WORLD_SIZE"),
    ):
        rank, size = os.environ.get(rank_name), os.environ.get(size_name)
        if rank is not None and size is not None:
            try:
                rank, size = int(rank), int(size)
            except ValueError:
                raise ValueError(
                    f"{rank_name}={rank!r} and {size_name}={size!r} must be whole numbers"
                ) from None
            if not 0 <= rank < size:
                raise ValueError(f"{rank_name}={rank} is not a rank of a world of {size_name}={size}")
            return rank, size
    return 0, 1


class Run:
    """The connection of one rank to `lockstep run`. Use connect()."""

    def __init__(self, address=None, token=None, rank=0, world_size=1, restart_count=0,
                 handle_signals=True):
        self.rank = rank
        self.world_size = world_size
        self.restart_count = restart_count
        self._sock = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._checkpoint_asked = False
        self._stop_asked = False
        self._last_step = -1
        self._last_sent = 0.0
        self._last_step_time = None
        self._pending = None
        self.launcher_lost = False
        self._failed = False
        if not address:
            return
        if handle_signals:
            self._install_handlers()
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"LOCKSTEP_MONITOR_ADDRESS={address!r} is not HOST:PORT; "
                "it is set by `lockstep run`, do not set it by hand")
        host = host.strip("[]")
        self._sock = socket.create_connection((host, int(port)), timeout=10)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send({
            "type": "hello", "token": token or "", "rank": rank, "world_size": world_size,
            "pid": os.getpid(), "host": _node_name(), "restart_count": restart_count,
        })
        self._sock.settimeout(None)
        self._alive = threading.Thread(target=self._keep_alive, name="lockstep-alive",
                                       daemon=True)
        self._alive.start()
        # An uncaught exception makes the goodbye at exit a failure's.
        previous_hook = sys.excepthook

        def note_failure(kind, value, traceback):
            self._failed = True
            previous_hook(kind, value, traceback)

        sys.excepthook = note_failure

    # -- what the script calls -------------------------------------------

    @property
    def connected(self):
        """Whether the launcher watches this rank."""
        return self._sock is not None and not self.launcher_lost

    def step(self, step, step_time=None, **metrics):
        """Reports that step `step` (the script's own number, the one it
        checkpoints under) is done, with its metrics (numbers), such as
        loss=0.5. `step_time` defaults to the time since the previous call."""
        now = time.monotonic()
        if step_time is None:
            step_time = 0.0 if self._last_step_time is None else now - self._last_step_time
        self._last_step_time = now
        self._last_step = int(step)
        line = {"type": "step", "step": int(step), "step_time": float(step_time),
                "metrics": {str(k): float(v) for k, v in metrics.items()}}
        with self._lock:
            if now - self._last_sent < _MIN_STEP_INTERVAL:
                self._pending = line
                return
            self._pending = None
            self._last_sent = now
        self._send(line)

    def checkpoint(self, step, stall=0.0):
        """Reports that a checkpoint of step `step` was saved, and how long
        saving it kept training waiting (seconds)."""
        self._flush_pending()
        self._send({"type": "checkpoint", "step": int(step), "stall": float(stall)})

    def should_checkpoint(self, step, every=0):
        """Whether to save a checkpoint after step `step`: every `every`
        steps (0: never on a schedule), when the launcher asked for one, or
        before a stop. The same answer on every rank."""
        scheduled = every > 0 and (step + 1) % every == 0
        asked = self._agree(self._checkpoint_asked or self._stop_asked)
        if asked:
            self._checkpoint_asked = False
        return scheduled or asked

    def should_stop(self):
        """Whether to stop now (after saving a checkpoint): the launcher, a
        Slurm time limit or a preemption asked. The same answer on every rank."""
        return self._agree(self._stop_asked)

    def close(self, exit_code=None):
        """Says goodbye with the code this rank exits with: 0 counts as ended
        on purpose, not as a crash. Called at exit when the script does not,
        with 1 after an uncaught exception and 0 otherwise: a script that
        ends with sys.exit(N) calls close(N) first. Call it last: the
        launcher stops processes that linger long after every rank said
        goodbye with 0."""
        if exit_code is None:
            exit_code = 1 if self._failed else 0
        if self._sock is None or self._closed.is_set():
            return
        self._flush_pending()
        self._send({"type": "exit", "code": int(exit_code), "last_step": self._last_step,
                    "stopped": self._stop_asked})
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- inside ------------------------------------------------------------

    def _flush_pending(self):
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._send(pending)

    def _send(self, message):
        if self._sock is None or self.launcher_lost:
            return
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError:
                # The launcher is gone: nobody watches this job any more;
                # stop at the next chance, with a checkpoint.
                self.launcher_lost = True
                self._stop_asked = True

    def _keep_alive(self):
        while not self._closed.wait(_ALIVE_SECONDS):
            self._flush_pending()
            self._send({"type": "alive", "collectives": []})

    def _install_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return

        def ask_checkpoint(signum, frame):
            self._checkpoint_asked = True

        def ask_stop(signum, frame):
            self._stop_asked = True

        signal.signal(signal.SIGUSR1, ask_checkpoint)
        signal.signal(signal.SIGTERM, ask_stop)
        signal.signal(signal.SIGUSR2, ask_stop)

    def _agree(self, flag):
        """True on every rank when it is true on any: torch.distributed's
        all-reduce when it is initialised. Otherwise this rank's flag: the
        launcher signals every rank alike, but a signal may reach ranks at
        different steps, so a script with collectives of its own (mpi4py)
        must agree on it itself."""
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            return bool(flag)
        if not (dist.is_available() and dist.is_initialized()):
            return bool(flag)
        device = "cpu"
        if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
            device = torch.device("cuda", torch.cuda.current_device())
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def _node_name():
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


_current = None


def connect(handle_signals=True):
    """The Run of this rank: connected to `lockstep run` when it started
    this process (LOCKSTEP_MONITOR_ADDRESS and _TOKEN are set), a quiet
    stand-in otherwise. One per process; later calls return the same."""
    global _current
    if _current is not None:
        return _current
    rank, world = rank_and_world()
    restart = os.environ.get("LOCKSTEP_RESTART_COUNT", "0")
    _current = Run(address=os.environ.get("LOCKSTEP_MONITOR_ADDRESS"),
                   token=os.environ.get("LOCKSTEP_MONITOR_TOKEN"), rank=rank, world_size=world,
                   restart_count=int(restart) if restart.isdigit() else 0,
                   handle_signals=handle_signals)
    import atexit
    atexit.register(_current.close)
    return _current


def init_torch_distributed(backend="gloo", timeout_seconds=300):
    """Initialises torch.distributed for this rank from the launcher's
    variables. The rendezvous is on MASTER_ADDR:MASTER_PORT when set; else
    on this machine (every rank on one host), at a port derived from the
    run's secret token and the attempt, so that each restart meets afresh
    and no other run guesses it. Returns (rank, world size)."""
    import datetime
    import torch.distributed as dist

    rank, world = rank_and_world()
    address = os.environ.get("MASTER_ADDR")
    if address is None:
        local = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
        nodes = os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES")
        if (local is not None and local != str(world)) or (nodes not in (None, "1")):
            raise RuntimeError(
                "the ranks run on several hosts: set MASTER_ADDR to rank 0's host (and "
                "MASTER_PORT to a free port there) for torch.distributed's rendezvous")
        address = "127.0.0.1"
    port = os.environ.get("MASTER_PORT")
    if port is None:
        seed = (os.environ.get("LOCKSTEP_MONITOR_TOKEN", "") + ":" +
                os.environ.get("LOCKSTEP_RESTART_COUNT", "0")).encode()
        port = 20000 + int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") % 30000
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout_seconds))
    return rank, world
