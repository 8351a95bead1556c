"""A process that imports modules once, then forks each ``python -m MODULE ARGS`` it is given.

``python fork_server.py MODULE...`` imports the MODULEs, then reads requests on stdin, one
JSON object a line (``module``, ``args``, ``env``, ``cwd``, ``log``). For each it forks a
child that starts a session of its own (its pid is its process group, as with
``subprocess.Popen(start_new_session=True)``), writes stdout and stderr to ``log``, reads
nothing, and runs ``module`` as ``__main__`` with ``args`` in ``cwd`` with exactly ``env``
(plus what the imports set, as they would have at its start). It answers each request
with ``{"pid": ...}`` and reports ``{"exited": pid, "code": ...}`` when a child ends
(negative: the signal that killed it, as ``Popen.returncode``).

A variable that the imports read (``os.environ``) or that the interpreter or native
libraries read at start (``NATIVE_PREFIXES``) is fixed once imported: ``ForkServer.forks``
says whether an environment keeps all of them as the server has them (but those named
``unchecked``); another runs as a fresh process. ``ForkServer`` is the client: ``spawn``
gives a ``ForkedProcess``, which answers ``pid``, ``poll``, ``wait`` and ``returncode`` as
the ``subprocess.Popen`` of that command would, so that its caller signals its process
group with ``os.killpg`` as before.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import random
import runpy
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

#: Read by the interpreter or by native libraries (OpenMP, BLAS, CUDA) when they load.
NATIVE_PREFIXES = ("PYTHON", "LD_", "LC_", "LANG", "MALLOC", "OMP_", "GOMP_", "KMP_", "MKL_")
NATIVE_PREFIXES += ("OPENBLAS_", "CUDA", "NVIDIA_", "PYTORCH_", "TORCH_")
READY_TIMEOUT_S = 600


class ForkedProcess:
    """A child of the fork server, as much of ``subprocess.Popen`` as a caller needs."""

    def __init__(self, pid: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self._exited = threading.Event()

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to end (``subprocess.TimeoutExpired`` after ``timeout``)."""
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def _exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()


class ForkServer:
    """Starts the fork server with ``env`` (it imports ``modules`` meanwhile) and talks to it.

    Its errors (and what the imports print) go to ``log``. A process may change the
    variables named ``unchecked``, even where the imports read them.
    """

    def __init__(
        self,
        modules: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        unchecked: Collection[str] = (),
    ) -> None:
        self.env = dict(env)
        self.unchecked = frozenset(unchecked)
        with log.open("ab") as errors:
            self._process = subprocess.Popen(
                [sys.executable, __file__, *modules],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        self._fixed: frozenset[str] = frozenset()
        self._ready = threading.Event()
        self._started: queue.Queue[ForkedProcess | str] = queue.Queue()
        self._children: dict[int, ForkedProcess] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="fork-server", daemon=True)
        self._reader.start()

    def forks(self, env: Mapping[str, str]) -> bool:
        """Whether a process with ``env`` can be forked: the imports read no variable that
        ``env`` gives another value (waits until the server has imported its modules)."""
        if not self._ready.wait(READY_TIMEOUT_S) or self._process.poll() is not None:
            return False
        names = self._fixed | {
            name for name in {*env, *self.env} if name.startswith(NATIVE_PREFIXES)
        }
        names -= self.unchecked
        return all(env.get(name) == self.env.get(name) for name in names)

    def spawn(
        self, module: str, args: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
    ) -> ForkedProcess:
        """Fork ``python -m module args`` in ``cwd`` with ``env``, its output to ``log``."""
        request = {"module": module, "args": list(args), "env": dict(env)}
        request |= {"cwd": str(cwd), "log": str(log)}
        with self._lock:
            stdin = self._process.stdin
            assert stdin is not None
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
            started = self._started.get()
        if isinstance(started, str):
            raise OSError(f"fork server: {started}")
        return started

    def close(self) -> int:
        """Stop the server (it kills the children left) and give its exit code."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        code = self._process.wait()
        self._reader.join()
        return code

    def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            message = json.loads(line)
            if "fixed" in message:
                self._fixed = frozenset(message["fixed"])
                self._ready.set()
            elif "pid" in message:
                child = ForkedProcess(message["pid"], [message["module"], *message["args"]])
                self._children[child.pid] = child
                self._started.put(child)
            elif "exited" in message:
                self._children.pop(message["exited"])._exit(message["code"])
            else:
                self._started.put(message["error"])
        # The server is gone: no child will be reported any more.
        self._ready.set()
        self._started.put("the server exited")
        for child in self._children.values():
            child._exit(-signal.SIGKILL)


# ------------------------------------------------------------------------ the server


@contextmanager
def _reads_recorded(names: set[str]) -> Iterator[None]:
    """Record in ``names`` every variable read through ``os.environ`` meanwhile (a scan of
    the whole environment reads every variable)."""
    environ_class = type(os.environ)

    class Recording(environ_class):  # type: ignore[valid-type, misc]
        def __getitem__(self, key: str) -> str:
            names.add(key)
            return super().__getitem__(key)  # type: ignore[no-any-return]

        def __contains__(self, key: object) -> bool:
            names.add(str(key))
            return super().__contains__(key)

    os.environ.__class__ = Recording
    try:
        yield
    finally:
        os.environ.__class__ = environ_class


def _exit_code(code: Any) -> int:
    """The process exit code of ``SystemExit(code)``, as the interpreter makes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run_as_main(module: str) -> int:
    """Run ``module`` as ``python -m`` does, then exit as the interpreter does."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # waits for non-daemon threads, too
    atexit._run_exitfuncs()
    return code


def _child(
    request: dict[str, Any], started: int, inherited: Sequence[int], imported: dict[str, str]
) -> None:
    """The body of a forked child: never returns. It writes to ``started`` once it leads
    its own session, which its process group is then."""
    code = 1
    try:
        os.setsid()
        os.write(started, b"s")
        os.close(started)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**request["env"], **imported})
        sys.path[0] = request["cwd"]
        sys.argv = [request["module"], *request["args"]]
        random.seed()  # a fresh interpreter draws its own seed
        code = _run_as_main(request["module"])
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):  # nothing left to report it to
                stream.flush()
        os._exit(code)


def _send(protocol: IO[str], message: dict[str, Any]) -> None:
    protocol.write(json.dumps(message) + "\n")
    protocol.flush()


def _reap(protocol: IO[str], children: set[int]) -> None:
    """Report every child that has ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(protocol, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(modules: Sequence[str]) -> None:
    """Import ``modules``, then fork a child for each request on stdin until it closes."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the imports print must not mix with the answers
    before = dict(os.environ)
    fixed: set[str] = set()
    with _reads_recorded(fixed):
        for module in modules:
            __import__(module)
    imported = {k: v for k, v in os.environ.items() if before.get(k) != v}
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    inherited = (protocol.fileno(), wake_read, wake_write)  # stdin is replaced
    children: set[int] = set()
    _send(protocol, {"fixed": sorted(fixed | set(imported))})
    pending = b""
    while True:
        readable, _, _ = select.select([0, wake_read], [], [])
        if wake_read in readable:
            while True:
                try:
                    os.read(wake_read, 512)
                except BlockingIOError:
                    break
        _reap(protocol, children)
        if 0 not in readable:
            continue
        data = os.read(0, 1 << 16)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            started, child_started = os.pipe()
            try:
                pid = os.fork()
            except OSError as error:
                os.close(started)
                os.close(child_started)
                _send(protocol, {"error": str(error)})
                continue
            if pid == 0:
                _child(request, child_started, (*inherited, started), imported)
            os.close(child_started)
            os.read(started, 1)  # as Popen returns: once the child leads its process group
            os.close(started)
            children.add(pid)
            _send(protocol, {"pid": pid, "module": request["module"], "args": request["args"]})
    # Closed: the client is done; no child outlives the server.
    for pid in children:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        _send(protocol, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve(sys.argv[1:])
