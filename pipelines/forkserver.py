"""The process that the daemon's run workers are forked from (pipelines/launcher.py).

Every run Dagster's default launcher starts is a new interpreter that imports the code location
(torch, scikit-learn, dagster: 3-5 s on a 2-core machine) and, for an embedding run, open_clip
(2-3 s) before its first step; ``conescope materialize`` pays that once for all its runs. This
process imports them once, then forks one child per run, which executes the run exactly as
``dagster api execute_run`` does (Dagster's own command, the one every container run launcher
runs), with the modules already in memory.

Protocol, one JSON object per line: after importing the code location (the first module; the
others are optional), it writes ``{"ready": true, "files": {path: [mtime_ns, size]}, "preload_s":
s, "skipped": [...]}`` (the project files it loaded, so the launcher can tell when they change) or
``{"error": "..."}`` and exits; then for every ``{"args": [...]}`` read on stdin it
forks and writes ``{"pid": n, "started": "..."}``. It exits when stdin closes.

Before serving it calls the warm-up function, if any (conescope's loads the profile's models on the
CPU into the cache the embedding steps read, so no run creates its model again), with torch on one
thread, and forks a test child that computes with torch's thread pool: a forkserver whose children
would hang is reported instead of used.

Run it as ``python -m pipelines.forkserver <working directory> <module> [<module> ...] [--warm-up
module:function]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from pipelines.instance import process_start_time

# torch.cuda.is_available() through NVML leaves CUDA uninitialised, so a forked child can still use it.
FORK_SAFE_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
PROBE_TIMEOUT_S = 20.0


def project_files(working_directory: Path) -> dict[str, list[int]]:
    """Every loaded module's file under ``working_directory``, and the active profile, with its
    modification time and size: what a code change touches."""
    root = working_directory.resolve()
    # installed packages are not the project's code, even in a virtual environment inside its folder
    installed = {Path(p).resolve() for p in (sys.prefix, sys.exec_prefix)}
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    try:
        from conescope.profile import resolve_profile_path

        files.add(str(resolve_profile_path(os.environ.get("CONESCOPE_PROFILE") or "demo")))
    except Exception:  # noqa: BLE001 - the code location's own load reports a bad profile
        pass
    stats = {}
    for name in sorted(f for f in files if f):
        path = Path(name).resolve()
        if (path.is_relative_to(root) and not any(path.is_relative_to(p) for p in installed)
                and "site-packages" not in path.parts and path.is_file()):
            st = path.stat()
            stats[str(path)] = [st.st_mtime_ns, st.st_size]
    return stats


def _restore_child(torch_threads: int | None) -> None:
    for s in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)


def _child(args: list[str], keep_open: tuple[int, ...], torch_threads: int | None) -> None:
    """In the forked child: execute the run with Dagster's CLI, then leave without running the
    forkserver's exit handlers."""
    code = 1
    try:
        for fd in keep_open:
            os.close(fd)
        _restore_child(torch_threads)
        from pipelines.dagster_private import cli_main

        sys.argv = ["dagster", *args]
        try:
            cli_main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must never return into the server's loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def fork_probe(torch_threads: int | None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Fork a child that computes as a run does (torch's thread pool, a matrix product); None when
    it ends well, else what went wrong. GNU OpenMP cannot be used in a child forked after the parent
    used it, and a run would hang: something in the imports or the warm-up computed in parallel."""
    pid = os.fork()
    if pid == 0:
        try:
            _restore_child(torch_threads)
            if torch_threads:
                import torch

                (torch.ones(1 << 20) * 2).sum()
                torch.ones(512, 512) @ torch.ones(512, 512)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return None if status == 0 else f"a forked test child failed (wait status {status})"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return (f"a forked test child hung in torch's thread pool for {timeout_s:.0f} s: something computed with "
            "torch in parallel in the forkserver before forking")


def _resolve_definitions(module) -> None:
    """Build the repository of every ``Definitions`` in the code location module once (0.25 s on the
    demo); Dagster caches it on the object, which the forked runs load."""
    import dagster as dg

    for value in list(vars(module).values()):
        if isinstance(value, dg.Definitions):
            value.get_repository_def()


def _warm_up(target: str) -> None:
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)()


def serve(working_directory: Path, modules: list[str], warm_up: str | None = None) -> int:
    # stdin/stdout are the launcher's pipes: keep them on private descriptors, and give the children
    # /dev/null and the daemon's stderr so that nothing they print reaches the protocol
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    os.environ.update(FORK_SAFE_ENV)
    os.chdir(working_directory)
    if str(working_directory) not in sys.path:
        sys.path.insert(0, str(working_directory))

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    t0 = time.perf_counter()
    try:
        importlib.import_module(modules[0])
    except BaseException:  # noqa: BLE001 - reported to the launcher, which launches the default way
        reply({"error": traceback.format_exc(limit=-8)})
        return 1
    skipped = []
    for module in modules[1:]:  # optional: a run that needs one imports it itself
        try:
            importlib.import_module(module)
        except ImportError:
            skipped.append(module)
    # The children get torch's own thread count back; here torch computes on one thread only (a
    # model's random initialisation in the warm-up), which keeps its OpenMP pool unstarted.
    torch_threads = None
    if "torch" in sys.modules:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        if warm_up:
            _warm_up(warm_up)
    except BaseException:  # noqa: BLE001 - the runs load what they need themselves
        reply({"error": f"warm-up {warm_up} failed:\n{traceback.format_exc(limit=-8)}"})
        return 1
    _resolve_definitions(sys.modules[modules[0]])
    # Objects made so far are never freed: the children's garbage collector leaves them alone rather
    # than touching (and so copying) every page of them.
    gc.freeze()
    problem = fork_probe(torch_threads)
    if problem:
        reply({"error": problem})
        return 1
    reply({"ready": True, "files": project_files(working_directory), "preload_s": time.perf_counter() - t0,
           "skipped": skipped})
    # the children are reaped by the kernel: nothing here waits for them
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in requests:
        if not line.strip():
            continue
        try:
            args = json.loads(line)["args"]
            pid = os.fork()
        except Exception as exc:  # noqa: BLE001 - a bad request or a failed fork is the launcher's to report
            reply({"error": f"{type(exc).__name__}: {exc}"})
            continue
        if pid == 0:
            _child(args, (requests.fileno(), replies.fileno()), torch_threads)
        reply({"pid": pid, "started": process_start_time(pid) or ""})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.forkserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("working_directory", type=Path)
    parser.add_argument("modules", nargs="+", help="the code location's module, then optional ones")
    parser.add_argument("--warm-up", help="module:function called once after the imports")
    args = parser.parse_args(argv)
    return serve(args.working_directory.resolve(), args.modules, args.warm_up)


if __name__ == "__main__":
    sys.exit(main())
