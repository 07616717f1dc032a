"""Run darkcsp in child processes under a memory limit and a timeout, several at once.

A regression of a budget (a MemoryError, an allocator abort, a fifo that hangs the reader) then
fails one test instead of taking the machine or the suite down with it.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

MEMORY_LIMIT = 4 << 30  # RLIMIT_AS of every child
TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool

    def error_lines(self) -> list[str]:
        """stderr without warnings and progress output."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and "Warning" not in line and not line.startswith("  ")]

    def describe(self) -> str:
        return (f"{' '.join(self.argv[-6:])!r}: rc={self.rc} timed_out={self.timed_out}\n"
                f"stderr tail:\n" + "\n".join(self.stderr.splitlines()[-8:]))


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               CUDA_VISIBLE_DEVICES="")
    return env


def darkcsp(*args: str) -> list[str]:
    return [sys.executable, "-m", "darkcsp", *args]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run_many(jobs: Mapping[str, Sequence[str]], cwd: str | os.PathLike, parallel: int = 3,
             timeout: float = TIMEOUT) -> dict[str, Result]:
    """Run every ``jobs`` argv (at most ``parallel`` at a time), each under
    :data:`MEMORY_LIMIT` and ``timeout`` seconds; a child past its time is killed."""
    pending = list(jobs.items())
    running: dict[str, tuple] = {}
    results: dict[str, Result] = {}
    env = _env()
    while pending or running:
        while pending and len(running) < parallel:
            name, argv = pending.pop(0)
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # never a full pipe
            proc = subprocess.Popen(list(argv), cwd=cwd, env=env, preexec_fn=_limit,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            running[name] = (proc, time.monotonic(), out, err)
        for name, (proc, started, out, err) in list(running.items()):
            timed_out = False
            if proc.poll() is None:
                if time.monotonic() - started < timeout:
                    continue
                proc.kill()
                timed_out = True
            proc.wait()
            texts = []
            for handle in (out, err):
                handle.seek(0)
                texts.append(handle.read().decode("utf-8", "replace"))
                handle.close()
            results[name] = Result(list(proc.args), None if timed_out else proc.returncode,
                                   texts[0], texts[1], timed_out)
            del running[name]
        time.sleep(0.02)
    return results


def assert_clean_error(result: Result, *needles: str) -> None:
    """Non-zero exit in time, no traceback, one ``darkcsp <cmd>: ...`` or argparse error line
    that contains every needle."""
    assert not result.timed_out and result.rc not in (None, 0), result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    errors = [line for line in result.error_lines()
              if line.startswith("darkcsp") and ": " in line]
    assert len(errors) == 1, result.describe()
    for needle in needles:
        assert needle in errors[0], result.describe()


_DRIVER = r'''
import contextlib, io, json, signal, sys, traceback
jobs = json.loads(sys.argv[1])
each = float(sys.argv[2])
from darkcsp.cli import main

class Hung(BaseException):
    pass

def alarm(*_):
    raise Hung()

signal.signal(signal.SIGALRM, alarm)
for name, argv in jobs.items():
    out, err = io.StringIO(), io.StringIO()
    rc, timed_out = None, False
    signal.setitimer(signal.ITIMER_REAL, each)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 1
    except Hung:
        timed_out = True
    except BaseException:
        err.write(traceback.format_exc())
        rc = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"name": name, "rc": rc, "stdout": out.getvalue(),
                      "stderr": err.getvalue(), "timed_out": timed_out}), flush=True)
'''


def run_cli_batch(jobs: Mapping[str, Sequence[str]], cwd: str | os.PathLike,
                  each: float = 30.0) -> dict[str, Result]:
    """``darkcsp.cli.main(argv)`` for every job, one after the other in ONE child process (one
    import of torch instead of one per job) under :data:`MEMORY_LIMIT`; a job past ``each``
    seconds is interrupted (a hang in open() included) and marked timed out. A job the child
    did not report (it died) is a Result with rc None."""
    import json

    argv = [sys.executable, "-c", _DRIVER, json.dumps({k: list(v) for k, v in jobs.items()}),
            str(each)]
    child = run_many({"batch": argv}, cwd, timeout=each * len(jobs) + 60)["batch"]
    results = {name: Result(list(job), None, "", child.stderr, child.timed_out)
               for name, job in jobs.items()}
    for line in child.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("name") in results:
            results[record["name"]] = Result(list(jobs[record["name"]]), record["rc"],
                                             record["stdout"], record["stderr"],
                                             record["timed_out"])
    return results
