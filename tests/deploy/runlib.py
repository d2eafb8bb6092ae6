"""Helpers shared by the tests that run deployment command lines against the built binaries
(tests/deploy/compose/run_compose.py, tests/deploy/manifests_run/run_manifests.py): free loopback
ports, small HTTP requests, a set of started processes with logs that is always cleaned up, and
the SIGTERM sequence a rolling update relies on.

    import runlib   (after sys.path.insert(0, <tests/deploy>))
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable

SKIP = 77
# Variables of the test's environment a started program may keep (sanitizer options, locale).
PASS_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
            "TSAN_OPTIONS")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL (a ctest
    timeout), so that no server outlives a test. Linux only; elsewhere a no-op."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in PASS_ENV}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 5.0,
         headers: dict[str, str] | None = None):
    """(status, body text); status None when nothing answered (body: the error)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return None, str(error)


def can_unshare_uts() -> bool:
    """Whether processes can get their own host name (a UTS namespace), as each container has."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-u", "true"], capture_output=True,
                          check=False).returncode == 0


class Processes:
    """Started programs, each with its log file in `work`; stop_all() kills whatever still runs."""

    def __init__(self, work: str):
        self.work = work
        self.started: list[tuple[str, subprocess.Popen, str]] = []
        self.unshare = can_unshare_uts()

    def start(self, name: str, argv: list[str], env: dict[str, str], hostname: str | None = None,
              cwd: str | None = None) -> subprocess.Popen:
        """Starts argv (its own session, output to <work>/<name>.log). With `hostname`, in its
        own UTS namespace with that host name when possible (`unshare -u` execs, so the pid is
        the program's own and signals reach it directly); otherwise the caller's env decides."""
        log = os.path.join(self.work, f"{name}.log")
        command = argv
        if hostname and self.unshare:
            command = ["unshare", "-u", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       cwd=cwd, start_new_session=True,
                                       preexec_fn=_die_with_parent)
        self.started.append((name, process, log))
        return process

    def process(self, name: str) -> subprocess.Popen:
        return next(p for n, p, _ in self.started if n == name)

    def exited(self, name: str) -> int | None:
        """The exit code of `name` if it has exited, else None."""
        return self.process(name).poll()

    def tail(self, name: str, lines: int = 15, skip: Callable[[str], bool] | None = None) -> str:
        """The last `lines` lines of name's output (without those `skip` matches)."""
        for process_name, _, log in self.started:
            if process_name == name:
                with open(log, encoding="utf-8", errors="replace") as f:
                    kept = [line for line in f if not (skip and skip(line))]
                return "".join(kept[-lines:])
        return ""

    def stop_all(self) -> None:
        for _, process, _ in self.started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except OSError:
                    process.kill()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


Check = Callable[[], "tuple[bool, str]"]


def sigterm_sequence(process: subprocess.Popen, name: str, *, not_ready: Check, serves: Check,
                     delay: float, grace: float, grace_name: str,
                     must_serve: bool = False) -> list[str]:
    """SIGTERMs `process` and checks what a rolling update without lost requests needs:
    readiness fails at once (not_ready() true within 2 s of the signal), requests are still
    served during the shutdown delay `delay` (serves() at once and again 2 s before the
    delay ends; with must_serve, at once even when the delay is 0: nothing else, e.g. a preStop
    hook, keeps the process serving while endpoints propagate), and the process exits 0 no
    earlier than the delay and within `grace` seconds (after which the orchestrator would
    SIGKILL it). Prints each passed step; returns the problems."""
    problems = []
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    # "At once" with room for a loaded machine: the proxy turns not-ready as soon as its signal
    # thread runs, well within the first readiness period of any orchestrator.
    for _ in range(20):
        time.sleep(0.1)
        ok, detail = not_ready()
        if ok:
            break
    if not ok:
        problems.append(f"{name}: readiness still passes 2 s after SIGTERM ({detail})")
    if delay > 1 or must_serve:
        checkpoints = [time.time()]
        if delay >= 4:
            checkpoints.append(sent + delay - 2)  # late in the delay, with margin for a slow host
        for at in checkpoints:
            time.sleep(max(0.0, at - time.time()))
            ok, detail = serves()
            if not ok:
                within = (f"within --shutdown-delay-seconds {delay:g}" if delay > 0 else
                          "(no --shutdown-delay-seconds: the endpoints still route to it)")
                problems.append(f"{name}: a request {time.time() - sent:.1f}s after SIGTERM, "
                                f"{within}, was not served ({detail})")
                break
        else:
            if not problems:
                print(f"ok: {name}: readiness fails at once after SIGTERM, requests still served "
                      f"until {time.time() - sent:.1f}s of the {delay:g}s shutdown delay")
    try:
        code = process.wait(timeout=max(0.0, grace - (time.time() - sent)))
        took = time.time() - sent
        if code != 0:
            problems.append(f"{name} exited {code} after SIGTERM")
        elif took < delay - 0.5:
            problems.append(f"{name} exited after {took:.1f}s, before its shutdown delay of {delay:g}s")
        else:
            print(f"ok: {name} exited 0 {took:.1f}s after SIGTERM ({grace_name} {grace:g}s)")
    except subprocess.TimeoutExpired:
        problems.append(f"{name} still runs {grace:g}s ({grace_name}) after SIGTERM: it would be "
                        "SIGKILLed")
    return problems


def flag_value(argv: list[str], name: str) -> str | None:
    """The value of `name` in a command line (`--flag VALUE` or `--flag=VALUE`), or None."""
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None
