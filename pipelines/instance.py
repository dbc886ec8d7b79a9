"""Dagster's home under the data root, so run history, schedules and pool limits persist; the lock that
lets one ``conescope materialize`` at a time work on a data root (docs/operations.md, "One
materialize per data root"); and the clean-up of runs whose process died (``kill -9``, a crashed
machine) so that a rerun never waits on the concurrency slots they held (docs/operations.md, "Crash
safety")."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil
import yaml

from conescope.file_lock import held_lock, lock_note
from storage.paths import DataRoot

# One slot per pool by default: the "duckdb" pool must stay at 1 on the embedded DuckDB backend
# (DuckDB lets a single process write the file); the "gpu" pool is raised to the number of GPUs by
# ensure_gpu_pool; on DuckLake ensure_warehouse_pool raises the "duckdb" pool too.
# Runs launched by the daemon (the automation sensor, the UI) go through Dagster's run queue.
# With the in-process executor (pipelines/executors.py) a run is one process whose steps wait on
# the pools in turn, so runs beyond the pools' slots mostly wait, holding a process with torch and a
# model in memory, and the CPUs they were given idle. See :func:`max_concurrent_runs`.
MAX_CONCURRENT_RUNS_CAP = 4
# Dagster's queue does not start a run whose first steps would all wait on a full pool (it counts
# each root step of the runs in progress: an embedding run of two datasets holds two). With one slot
# per pool that serializes the runs of a pool, and each run's start (a new process that loads the
# code location: seconds) adds to the refresh (measured on the tiny profile: the gpu pool's runs ran
# strictly one after another, process start included, with a buffer of 1 too). A buffer this large
# leaves the pools out of the queue's decision: max_concurrent_runs bounds the processes, and a run
# beyond the free slots starts, loads, and waits on its pool inside its process.
POOL_RUN_BUFFER = 100
# The queue daemon's poll interval: Dagster's default (5 s) adds up to 5 s before each of the ~20
# runs of a refresh starts; a poll of the run table each second costs nothing measurable.
DEQUEUE_INTERVAL_S = 1


def max_concurrent_runs(cpus: int | None = None) -> int:
    """Runs in progress at once: one per two CPUs, at least one, at most :data:`MAX_CONCURRENT_RUNS_CAP`.

    A run's steps wait on the pools in turn (one embedding, one warehouse writer at a time), and each
    run gets ``CPUs / runs`` threads (:func:`run_thread_env`): with two runs of one thread each on two
    cores, a run waiting on a pool leaves its core idle while the other computes on one thread. On
    the demo (2 cores, bench/daemon_refresh.py) the two image runs then took 117 s side by side
    against 69 s one after the other with two threads each."""
    return max(1, min((cpus if cpus is not None else (os.cpu_count() or 1)) // 2, MAX_CONCURRENT_RUNS_CAP))


# Thread pools sized by the variables torch (OpenMP), numpy/scipy (BLAS) and scikit-learn read at start.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_thread_env(runs: int, cpus: int | None = None, environ: dict | None = None) -> dict[str, str]:
    """The thread counts the processes of ``conescope dev`` (and the runs they launch) inherit: the CPUs
    shared among the ``runs`` that may be in progress at once, at least one each. Unset, every run's
    torch, BLAS and OpenMP pools size themselves to every CPU, and two runs at once on two cores ran
    the image layer of the demo three times slower than one after the other (bench/daemon_refresh.py:
    OpenMP workers spin while they wait for their turn on a core). A variable already set is kept."""
    environ = os.environ if environ is None else environ
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    per_run = str(max(1, cpus // max(1, runs)))
    return {var: environ.get(var, per_run) for var in THREAD_VARS}


def configured_max_runs(root: DataRoot) -> int:
    """``concurrency.runs.max_concurrent_runs`` of the instance config in the data root (as written by
    :func:`ensure_dagster_home` or set by hand)."""
    config = yaml.safe_load((root.dagster_home / "dagster.yaml").read_text()) or {}
    return int(((config.get("concurrency") or {}).get("runs") or {}).get("max_concurrent_runs")
               or max_concurrent_runs())


def instance_config(cpus: int | None = None) -> dict:
    """The instance config ``conescope dev`` and ``conescope materialize`` give Dagster's home in the data
    root; the repository's own ``dagster.yaml`` holds it for a 2-core machine, for plain ``dagster dev``
    (:data:`REPOSITORY_CONFIG`)."""
    return {
        "telemetry": {"enabled": False},
        "concurrency": {"pools": {"default_limit": 1, "granularity": "op",
                                  "op_granularity_run_buffer": POOL_RUN_BUFFER},
                        "runs": {"max_concurrent_runs": max_concurrent_runs(cpus)}},
        "run_queue": {"dequeue_interval_seconds": DEQUEUE_INTERVAL_S},
        # runs forked from a process that has imported the code location (pipelines/launcher.py)
        "run_launcher": {"module": "pipelines.launcher", "class": "PreforkRunLauncher"},
        # The daemon (`conescope dev`) fails runs that never start and runs whose worker died (the
        # launcher, pipelines/launcher.py, checks its forked workers), and frees the pool slots that
        # runs which ended still claim (a killed worker never releases its own).
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "max_resume_run_attempts": 0,
                           "poll_interval_seconds": 30, "free_slots_after_run_end_seconds": 10},
    }


# Plain `dagster dev` from the repository root, DAGSTER_HOME unset, opens a temporary instance configured by the
# repository's dagster.yaml (Dagster: "If DAGSTER_HOME isn't set, ... a temporary directory", its config read
# from the working folder). That file is instance_config(cpus=2) with the storage of the default data root's
# Dagster home, so plain `dagster dev` sees the run history `conescope dev` and `conescope materialize` keep.
REPOSITORY_CONFIG = "dagster.yaml"
REPOSITORY_CONFIG_CPUS = 2
REPOSITORY_STORAGE = {"storage": {"sqlite": {"base_dir": "data/dagster_home"}}}


def repository_config() -> dict:
    """What the repository's ``dagster.yaml`` holds (tests/test_instance.py compares them)."""
    return {**REPOSITORY_STORAGE, **instance_config(cpus=REPOSITORY_CONFIG_CPUS)}


# Tag of every run `conescope materialize` executes: the process that owns it, "host:pid:start time".
OWNER_TAG = "conescope/owner"
LIVE_STATUSES = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _with_missing(defaults: dict, current: dict) -> dict:
    """``current`` plus the keys of ``defaults`` it lacks, at every level of nesting."""
    merged = dict(current)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_missing(value, merged[key])
    return merged


def ensure_dagster_home(root: DataRoot) -> str:
    """Create ``<data root>/dagster_home/dagster.yaml`` if missing (an existing one gains the keys of
    :func:`instance_config` it lacks, at any depth; its own settings are kept), export DAGSTER_HOME,
    return it. On a fresh data root Dagster's storages are created first, under
    :func:`storage_creation_lock`, and ``dagster.yaml`` written after them: a process that opens the
    instance once the file is there (Dagster's processes under ``conescope dev``, a second command)
    finds them complete. Two processes creating them at once could leave two migration heads
    (``alembic_version`` with two rows), after which every command on the data root fails."""
    home = root.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    with storage_creation_lock(root):
        if not config.exists():
            _create_storage(home)
        current = (yaml.safe_load(config.read_text()) or {}) if config.exists() else {}
        merged = _with_missing(instance_config(), current)
        if merged != current:
            tmp = config.with_suffix(".yaml.tmp")
            tmp.write_text(yaml.safe_dump(merged, sort_keys=False))
            os.replace(tmp, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


def _create_storage(home) -> None:
    """Dagster's default storages in ``home`` (run, event log, schedule: SQLite files), which
    :func:`instance_config` leaves as they are; Dagster creates them when an instance is opened."""
    import dagster as dg

    from pipelines.dagster_private import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides={"telemetry": {"enabled": False}})):
        pass


@contextmanager
def materialize_lock(root: DataRoot, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the data root for one ``conescope materialize``; a second one waits for the first, saying
    so in one line, then finds everything the first wrote (its plan then runs only what is still stale).
    Two at once on a fresh data root otherwise both create Dagster's storage, which could be left with
    two migration heads (``alembic_version`` with two rows: every later command fails), and both do
    all the work. A ``flock``: released when the holder exits or is killed, ``kill -9`` included."""
    path = root.scratch / "materialize.lock"

    def waiting() -> None:
        holder = lock_note(path) or "another process"
        log(f"conescope materialize: waiting for the conescope materialize ({holder}) that holds {root.root}")

    with held_lock(path, on_wait=waiting, note=f"pid {os.getpid()}"):
        yield


@contextmanager
def storage_creation_lock(root: DataRoot) -> Iterator[None]:
    """Held while Dagster's storages may be created: by :func:`ensure_dagster_home` on a fresh data
    root, and while ``conescope materialize`` and ``conescope dev`` (before it starts Dagster's
    processes) open the instance. The first to hold it creates them, the others wait and open what it
    made: Dagster's SQLite storages are not safe to create from two processes at once
    (``alembic_version`` can end with two heads)."""
    with held_lock(root.scratch / "dagster-storage.lock"):
        yield


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ensure_gpu_pool(instance, slots: int | None = None) -> int:
    """Give the "gpu" pool (the embedding steps) one slot per GPU of this machine, at least one,
    unless a limit was already set (``dagster instance concurrency set gpu N``); returns the limit."""
    from assets.keys import GPU_POOL

    storage = instance.event_log_storage
    if GPU_POOL in storage.get_concurrency_keys():
        return storage.get_concurrency_info(GPU_POOL).slot_count
    limit = slots if slots is not None else max(1, gpu_count())
    storage.set_concurrency_slots(GPU_POOL, limit)
    return limit


def ensure_warehouse_pool(instance, kind: str, slots: int | None = None) -> int:
    """The "duckdb" pool (every asset that writes metric rows): one slot on the embedded DuckDB file
    (one writer at a time), ``slots`` (default: the CPU count) on DuckLake, whose writers run side by
    side. A limit set by hand above one is kept on DuckLake; returns the limit."""
    from assets.keys import DUCKDB_POOL

    storage = instance.event_log_storage
    current = (storage.get_concurrency_info(DUCKDB_POOL).slot_count
               if DUCKDB_POOL in storage.get_concurrency_keys() else None)
    if kind == "duckdb":
        limit = 1
    elif slots is not None:
        limit = slots
    else:
        limit = current if current is not None and current > 1 else max(1, os.cpu_count() or 1)
    if current != limit:
        storage.set_concurrency_slots(DUCKDB_POOL, limit)
    return limit


def _ticks_since_boot(process: psutil.Process) -> str:
    # psutil's create_time is the boot time plus the start time since boot; taken from the boot time,
    # it stays the same when the system clock is set or slewed, where the epoch time moves
    return str(round((process.create_time() - psutil.boot_time()) * os.sysconf("SC_CLK_TCK")))


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (the unit of the start time in
    ``/proc/<pid>/stat``: run tags written before psutil hold that), None if it is gone."""
    try:
        return _ticks_since_boot(psutil.Process(pid))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_tag(pid: int, started: str | None = None) -> str:
    """``host:pid:start time`` of process ``pid`` of this machine: the tag value that names the process
    running a run (:data:`OWNER_TAG`, the launcher's worker tag)."""
    started = process_start_time(pid) if started is None else started
    return f"{socket.gethostname()}:{pid}:{started or ''}"


def local_process(tag: str | None) -> tuple[int, str] | None:
    """(pid, start time) of a :func:`process_tag` value, None when it names another machine's process
    or is not one."""
    parts = (tag or "").split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2]


def owner_tag() -> str:
    """:func:`process_tag` of this process, written on every run it executes."""
    return process_tag(os.getpid())


def process_alive(pid: int, started: str) -> bool:
    """Whether process ``pid`` of this machine, started at ``started`` (:func:`process_start_time`; empty
    when not known), still runs: a recycled pid belongs to a process started at another time."""
    try:
        process = psutil.Process(pid)
        return not started or _ticks_since_boot(process) == started
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's live process


def recover_dead_runs(instance, log: Callable[[str], None] = print) -> list[str]:
    """Mark failed every unfinished run that ``conescope materialize`` started on this machine in a
    process that no longer exists, and free the concurrency slots (and queued slot claims) it held.
    Runs of other machines, and runs launched from the UI (the daemon's run monitoring watches
    those), are left alone. Returns the ids of the runs it failed."""
    import dagster as dg

    host = socket.gethostname()
    statuses = [dg.DagsterRunStatus[s] for s in LIVE_STATUSES]
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=statuses)):
        owner = local_process(run.tags.get(OWNER_TAG))
        if owner is None or process_alive(*owner):
            continue
        partition = run.tags.get("dagster/partition", "")
        instance.report_run_failed(run, f"process {owner[0]} on {host} that ran this run is gone "
                                        f"(killed or crashed); marked failed by conescope materialize")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log(f"run {run.run_id} ({run.job_name} {partition}) was left {run.status.value} by dead process "
            f"{owner[0]}: marked failed, its concurrency slots freed")
        failed.append(run.run_id)
    _free_slots_of_finished_runs(instance, log)
    return failed


def _free_slots_of_finished_runs(instance, log: Callable[[str], None]) -> None:
    """Free slots still claimed by runs that have ended (a run failed or terminated from outside,
    e.g. in the UI, keeps the slots its dead worker claimed)."""
    import dagster as dg

    storage = instance.event_log_storage
    holders = {slot.run_id for key in storage.get_concurrency_keys()
               for slot in storage.get_concurrency_info(key).claimed_slots}
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                         dg.DagsterRunStatus.CANCELED):
            storage.free_concurrency_slots_for_run(run_id)
            log(f"run {run_id} ({run.status.value if run else 'deleted'}) still held concurrency slots: freed")
