"""Hostile-input fuzzing harness for the ``darkcsp`` command line.

Issue "Trust: no input crashes darkcsp, no user file is lost, no checkpoint runs code". Every attack
is a set of files written into a fresh work folder plus one ``python -m darkcsp ...`` command
line. The command runs in a subprocess (address-space, file-size and time limits, one thread,
stdin closed) and its outcome gets a verdict:

* ``ok``: exit status 0;
* ``clean-error``: a non-zero exit status with a short message (no traceback, at most
  ``MAX_ERROR_LINES`` significant stderr lines, not killed by a signal);
* ``failure``: anything else (traceback, signal, timeout, MemoryError, a long dump), and also any
  change to an input file (sha256 + size + mtime) or a marker file left by a pickled payload.

The generators are plain functions ``gen(rng, ctx) -> Attack`` of a :class:`random.Random`, so
``tools/fuzz.py`` drives them with seeds and the tests drive them through hypothesis
(:func:`strategies`). This module imports nothing from ``darkcsp``: the package is only ever run
as a command, so the harness keeps working while the package's modules move.
"""
from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DARKCSP_SHARED", REPO.parent / "shared"))
CFG_DIR = REPO / "cfg"

DEFAULT_MEMORY = 6 << 30       # RLIMIT_AS of a run
DEFAULT_FILE_SIZE = 1 << 30    # RLIMIT_FSIZE: no attack may fill the disk
DEFAULT_TIMEOUT = 60.0
FIFO_TIMEOUT = 8.0             # an attack with a fifo: a run that needs longer hangs on it
MAX_ERROR_LINES = 3      # lines of a short error message
MAX_MESSAGE_LINES = 8    # ... when it is darkcsp's own "darkcsp CMD: ..." message
WORK = b"@@WORK@@"             # replaced by the work folder's absolute path in written files

# Stderr that means a crash even when it is short.
CRASH_PATTERNS = ("Traceback (most recent call last)", "MemoryError", "Segmentation fault",
                  "core dumped", "Fatal Python error", "DefaultCPUAllocator",
                  "std::bad_alloc", "terminate called", "Aborted", "Killed")

# Arguments that make a training run take a couple of seconds on a 2-core CPU.
TINY_TRAIN = ["--max-batches", "1", "--batch", "2", "--subdivisions", "1", "--size", "32",
              "--synthetic-train", "4", "--synthetic-valid", "2", "--synthetic-size", "32",
              "--synthetic-classes", "1", "--workers", "0", "--no-progress", "--threads", "1",
              "--device", "cpu", "--map-every", "1000", "--map-images", "2",
              "--save-every", "1000"]


# ----------------------------------------------------------------------------------------------
# Running one command


@dataclass
class Outcome:
    argv: list[str]
    cwd: str
    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    verdict: str = ""          # ok | clean-error | failure
    reason: str = ""           # why it is a failure (or the clean error's message)
    changed: list[str] = field(default_factory=list)   # inputs modified / deleted / created
    markers: list[str] = field(default_factory=list)   # payload markers found

    @property
    def command(self) -> str:
        return shlex.join(["python", "-m", "darkcsp", *self.argv])

    def last_line(self) -> str:
        lines = [ln.strip() for ln in re.split(r"[\r\n]", self.stderr) if ln.strip()]
        return lines[-1] if lines else ""

    def stderr_tail(self, n: int = 6) -> list[str]:
        lines = [ln.rstrip() for ln in re.split(r"[\r\n]", self.stderr) if ln.strip()]
        return lines[-n:]

    def describe(self) -> str:
        text = f"{self.verdict}: {self.reason}\n  $ (cd {self.cwd} && {self.command})"
        tail = "\n    ".join(self.stderr_tail())
        return text + (f"\n  stderr:\n    {tail}" if tail else "")


def _limits(memory_bytes: int, file_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[key] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["TQDM_DISABLE"] = "1"
    env["COLUMNS"] = "200"
    env["MPLBACKEND"] = "Agg"
    return env


def significant_lines(stderr: str) -> list[str]:
    """Stderr lines that count towards an error's length: no blank lines, progress bars,
    warnings or argparse usage blocks."""
    lines = [ln.rstrip() for ln in re.split(r"[\r\n]", stderr) if ln.strip()]
    kept: list[str] = []
    skip_source = False
    in_usage = False
    for ln in lines:
        s = ln.strip()
        if in_usage:
            if re.match(r"^\S+( \S+)?: error:", s):
                in_usage = False
                kept.append(s)
            continue
        if s.startswith("usage:"):
            in_usage = True
            continue
        if skip_source and ln[:1].isspace():
            skip_source = False
            continue
        skip_source = False
        if re.search(r"\b\w*Warning: ", s):      # python warnings: "file:N: XWarning: msg"
            skip_source = True
            continue
        if s.lower().startswith("warning"):
            continue
        if re.search(r"\d+%\|", s) or re.search(r"\d+(it|img)/s\]", s):
            continue
        kept.append(s)
    return kept


def classify(rc: int | None, stderr: str, timed_out: bool) -> tuple[str, str]:
    if timed_out:
        return "failure", "timeout"
    assert rc is not None
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return "failure", f"killed by signal {name}"
    crash = next((p for p in CRASH_PATTERNS if p in stderr), None)
    if rc == 0:
        if crash:
            return "failure", f"exit status 0 but stderr has {crash!r}"
        return "ok", ""
    if crash:
        return "failure", "traceback" if crash.startswith("Traceback") else crash
    if rc > 128:
        return "failure", f"exit status {rc} (a signal?)"
    lines = significant_lines(stderr)
    if not lines:
        return "failure", f"exit status {rc} without any message"
    own = [i for i, ln in enumerate(lines) if re.match(r"^darkcsp( \w+)?: ", ln)]
    if own:   # darkcsp's own error message (it may quote a few lines of the file, as YAML does)
        if len(lines) - own[0] > MAX_MESSAGE_LINES:
            return "failure", f"error message of {len(lines) - own[0]} lines"
        return "clean-error", lines[own[0]]
    if len(lines) > MAX_ERROR_LINES:
        return "failure", f"error message of {len(lines)} lines"
    return "clean-error", lines[-1]


def fingerprint(path: Path) -> tuple | None:
    """(kind, size, mtime_ns, sha256) of a path, without ever opening a fifo or a device."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)
    if not stat.S_ISREG(st.st_mode):
        return ("special", stat.S_IFMT(st.st_mode))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return ("file", st.st_size, st.st_mtime_ns, digest.hexdigest())


def run_cli(args: Sequence[str], cwd: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT,
            memory_bytes: int = DEFAULT_MEMORY, inputs: Iterable[str | os.PathLike] = (),
            markers: Iterable[str | os.PathLike] = (),
            file_bytes: int = DEFAULT_FILE_SIZE) -> Outcome:
    """Run ``python -m darkcsp *args`` in ``cwd`` under limits and judge it.

    ``inputs`` (relative to ``cwd`` or absolute) must be byte-for-byte unchanged afterwards;
    ``markers`` must not exist afterwards (a pickled payload would have created them)."""
    cwd = Path(cwd)
    args = [str(a) for a in args]
    protected = [cwd / p for p in inputs]
    before = {p: fingerprint(p) for p in protected}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "darkcsp", *args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(), start_new_session=True,
                            preexec_fn=_limits(memory_bytes, file_bytes))
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the process group this call started
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    outcome = Outcome(args, str(cwd), proc.returncode, out.decode("utf-8", "replace"),
                      err.decode("utf-8", "replace"), timed_out, time.monotonic() - start)
    outcome.verdict, outcome.reason = classify(proc.returncode, outcome.stderr, timed_out)
    for p in protected:
        after = fingerprint(p)
        if after != before[p]:
            what = "deleted" if after is None else "created" if before[p] is None else "modified"
            outcome.changed.append(f"{os.path.relpath(p, cwd)} {what}")
    outcome.markers = [str(m) for m in markers if os.path.lexists(cwd / m)]
    problems = []
    if outcome.changed:
        problems.append("input changed: " + ", ".join(outcome.changed))
    if outcome.markers:
        problems.append("pickled code ran: " + ", ".join(outcome.markers))
    if problems:
        if outcome.verdict == "failure":
            problems.append(outcome.reason)
        outcome.verdict, outcome.reason = "failure", "; ".join(problems)
    return outcome


# ----------------------------------------------------------------------------------------------
# Attacks


class Special:
    """A non-regular file to create: a fifo, a folder or a symlink."""

    def __init__(self, kind: str, target: str = "") -> None:
        self.kind, self.target = kind, target

    def __repr__(self) -> str:
        return f"<{self.kind}{' -> ' + self.target if self.target else ''}>"


FIFO = Special("fifo")
DIR = Special("dir")

Content = Union[bytes, Special]


@dataclass
class Attack:
    entry: str                       # entry point: cfg, weights, pt, images, datasets, ...
    name: str                        # what was done to the input
    argv: list[str]                  # after ``python -m darkcsp``; paths relative to the work dir
    files: dict[str, Content] = field(default_factory=dict)
    protect: list[str] = field(default_factory=list)   # globs; default: every written file
    markers: list[str] = field(default_factory=list)
    pre: list[list[str]] = field(default_factory=list)  # commands that must succeed first
    timeout: float | None = None

    def summary(self) -> str:
        return f"[{self.entry}] {self.name}: {shlex.join(['darkcsp', *self.argv])}"


def materialize(attack: Attack, workdir: Path) -> None:
    """Write the attack's files into ``workdir`` (``@@WORK@@`` becomes the folder's path)."""
    for rel, content in attack.files.items():
        path = workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Special):
            if content.kind == "fifo":
                os.mkfifo(path)
            elif content.kind == "dir":
                path.mkdir(exist_ok=True)
            elif content.kind == "symlink":
                os.symlink(content.target, path)
            continue
        path.write_bytes(content.replace(WORK, str(workdir).encode()))


def _protected(attack: Attack, workdir: Path) -> list[str]:
    globs = attack.protect or [rel for rel, c in attack.files.items()
                               if not (isinstance(c, Special) and c.kind == "dir")]
    found: list[str] = []
    for pattern in globs:
        if any(ch in pattern for ch in "*?["):
            found += sorted(os.path.relpath(p, workdir) for p in workdir.glob(pattern)
                            if not p.is_dir())
        else:
            found.append(pattern)
    return list(dict.fromkeys(found))


def execute(attack: Attack, workdir: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT,
            memory_bytes: int = DEFAULT_MEMORY) -> Outcome:
    """Materialize ``attack`` in ``workdir`` (empty), run its commands, judge the last."""
    workdir = Path(workdir)
    materialize(attack, workdir)
    limit = min(timeout, attack.timeout or timeout)
    if any(isinstance(c, Special) and c.kind == "fifo" for c in attack.files.values()):
        limit = min(limit, FIFO_TIMEOUT)   # reading a fifo nobody writes blocks for ever
    for pre in attack.pre:
        first = run_cli(pre, workdir, timeout=limit, memory_bytes=memory_bytes)
        if first.verdict != "ok":
            first.verdict, first.reason = "failure", f"setup command failed: {first.reason}"
            return first
    return run_cli(attack.argv, workdir, timeout=limit, memory_bytes=memory_bytes,
                   inputs=_protected(attack, workdir), markers=attack.markers)


# ----------------------------------------------------------------------------------------------
# Base (valid) inputs


TINY_CFG = """[net]
batch=1
subdivisions=1
width=32
height=32
channels=3
learning_rate=0.001
burn_in=0
max_batches=10
policy=steps
steps=8,9
scales=.1,.1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 8,10, 12,14
classes=3
num=3
jitter=.3
ignore_thresh=.7
truth_thresh=1
random=0
"""

# Every dialect macro ([csp], [partial_transition], [maxout], [prn], [sam], [efm]) at 32 x 32.
TINY_DIALECT_CFG = """[net]
batch=1
subdivisions=1
width=32
height=32
channels=3
max_batches=10

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[csp]
filters=32
downsample=1
split=0.5
split_mode=slice
part1=slice
block=pelee
blocks=1
growth_rate=8

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

[partial_transition]
route=-2
filters=16
pool=max

[maxout]
k=2

[prn]
from=-2

[sam]

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

[efm]
layers=1,-1
filters=16
size=3
maxout=2
sam=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 8,10, 12,14
classes=3
num=3
random=0
"""


def tiny_weights(seen: int = 0, seed: int = 0) -> bytes:
    """A valid Darknet ``.weights`` for :data:`TINY_CFG` (written here, not by darkcsp):
    header 0.2.0 + seen, then per conv biases, [scales, means, variances,] weights."""
    rng = random.Random(seed)
    values: list[float] = []
    for filters, inputs, size, bn in ((8, 3, 3, True), (16, 8, 3, True), (24, 16, 1, False)):
        values += [rng.uniform(-0.1, 0.1) for _ in range(filters)]
        if bn:
            values += [rng.uniform(0.5, 1.5) for _ in range(filters)]
            values += [rng.uniform(-0.1, 0.1) for _ in range(filters)]
            values += [rng.uniform(0.5, 1.5) for _ in range(filters)]
        values += [rng.gauss(0, 0.1) for _ in range(filters * inputs * size * size)]
    return struct.pack("<3iQ", 0, 2, 0, seen) + struct.pack(f"<{len(values)}f", *values)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                   zlib.crc32(kind + data))


def png_bytes(width: int, height: int, seed: int = 0, channels: int = 3,
              declared: tuple[int, int] | None = None) -> bytes:
    """An 8-bit PNG (written here); ``declared`` puts another size in IHDR than the data has."""
    rng = random.Random(seed)
    colour = {1: 0, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(width * channels))
                    for _ in range(height))
    w, h = declared or (width, height)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour,
                                                                   0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))


def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    import cv2
    import numpy as np
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


class SetupError(RuntimeError):
    """darkcsp could not make one of the valid base files an attack mutates."""


class Context:
    """The valid inputs the generators mutate, made once in ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # cfgs --------------------------------------------------------------------------------
    @cached_property
    def cfgs(self) -> dict[str, bytes]:
        """Base cfgs: the tiny ones first, then the repo's zoo, then the shared yolov3-tiny."""
        found = {"tiny.cfg": TINY_CFG.encode(), "dialect.cfg": TINY_DIALECT_CFG.encode()}
        for path in sorted(CFG_DIR.glob("*.cfg")):
            found[path.name] = path.read_bytes()
        shared = SHARED / "models" / "yolov3-tiny" / "yolov3-tiny.cfg"
        if shared.is_file():
            found["shared-yolov3-tiny.cfg"] = shared.read_bytes()
        return found

    # weights -----------------------------------------------------------------------------
    @cached_property
    def weights(self) -> bytes:
        return tiny_weights()

    def _darkcsp(self, args: list[str], what: str, timeout: float = 120) -> Outcome:
        out = run_cli(args, self.root, timeout=timeout)
        if out.verdict != "ok":
            raise SetupError(f"cannot make {what}: {out.describe()}")
        return out

    @cached_property
    def pt(self) -> bytes:
        """A valid darkcsp ``.pt`` of the tiny cfg, made by ``darkcsp convert``."""
        (self.root / "tiny.cfg").write_bytes(self.cfgs["tiny.cfg"])
        (self.root / "tiny.weights").write_bytes(self.weights)
        self._darkcsp(["convert", "tiny.cfg", "tiny.weights", "tiny.pt"], "tiny.pt")
        return (self.root / "tiny.pt").read_bytes()

    @cached_property
    def train_checkpoint(self) -> bytes:
        """``last.pt`` of a one-iteration training run of the tiny cfg."""
        (self.root / "tiny.cfg").write_bytes(self.cfgs["tiny.cfg"])
        shutil.rmtree(self.root / "run", ignore_errors=True)
        self._darkcsp(["train", "tiny.cfg", "--out", "run", *TINY_TRAIN], "a training run",
                      timeout=300)
        return (self.root / "run" / "last.pt").read_bytes()

    @cached_property
    def dialect_weights(self) -> bytes | None:
        """``.weights`` of the tiny dialect cfg (through darkcsp's public ``Darknet``)."""
        (self.root / "dialect.cfg").write_bytes(self.cfgs["dialect.cfg"])
        code = ("import sys, darkcsp; "
                "darkcsp.Darknet(sys.argv[1]).save_weights(sys.argv[2])")
        proc = subprocess.run([sys.executable, "-c", code, "dialect.cfg", "dialect.weights"],
                              cwd=self.root, env=child_env(), capture_output=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        path = self.root / "dialect.weights"
        return path.read_bytes() if proc.returncode == 0 and path.is_file() else None

    # images ------------------------------------------------------------------------------
    @cached_property
    def images(self) -> dict[str, bytes]:
        found = {"small.png": png_bytes(40, 30, seed=1), "small.jpg": jpeg_bytes(48, 36, seed=2)}
        folder = SHARED / "images"
        if folder.is_dir():
            for path in sorted(folder.glob("*.png"))[:2]:
                found["shared-" + path.name] = path.read_bytes()
        return found

    # dataset -----------------------------------------------------------------------------
    @cached_property
    def dataset(self) -> dict[str, bytes]:
        """A Darknet dataset (3 train + 2 valid 32 x 32 images, labels beside them, 1 class):
        obj.data, obj.names, train.txt, valid.txt, images/*.png|txt (paths use @@WORK@@)."""
        files: dict[str, bytes] = {}
        rng = random.Random(5)
        lists: dict[str, list[str]] = {"train": [], "valid": []}
        for split, count in (("train", 3), ("valid", 2)):
            for i in range(count):
                stem = f"ds/images/{split}_{i:03d}"
                files[stem + ".png"] = png_bytes(32, 32, seed=10 * i + len(split))
                rows = []
                for _ in range(rng.randint(1, 3)):
                    w, h = rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)
                    rows.append(f"0 {rng.uniform(w / 2, 1 - w / 2):.6f} "
                                f"{rng.uniform(h / 2, 1 - h / 2):.6f} {w:.6f} {h:.6f}")
                files[stem + ".txt"] = ("\n".join(rows) + "\n").encode()
                lists[split].append(WORK.decode() + "/" + stem + ".png")
        files["ds/train.txt"] = ("\n".join(lists["train"]) + "\n").encode()
        files["ds/valid.txt"] = ("\n".join(lists["valid"]) + "\n").encode()
        files["ds/obj.names"] = b"shape\n"
        files["ds/obj.data"] = (f"classes = 1\ntrain = {WORK.decode()}/ds/train.txt\n"
                                f"valid = {WORK.decode()}/ds/valid.txt\n"
                                f"names = {WORK.decode()}/ds/obj.names\n"
                                f"backup = {WORK.decode()}/ds/backup\n").encode()
        return files


# ----------------------------------------------------------------------------------------------
# Hostile values

HOSTILE_INTS = ["2000000000", "-1", "0", "-2147483649", "9223372036854775808",
                "99999999999999999999999999", "1e309", "nan", "inf", "-inf", "abc", "", " ",
                "0x10", "1.5", "-0", "1_000", "\u0661", "65536", "100000000", "-100"]
HOSTILE_FLOATS = ["nan", "-1", "2", "inf", "-inf", "0", "1e309", "-1e309", "abc", "", "1e-320",
                  "NaN", "3.4e39"]
HOSTILE_LISTS = ["", ",", ",,", "1,,2", "-1,", "nan,nan", "1000", "-1000", "0", "-0",
                 "1:transition", "7:bogus", "-1:concat", "2000000000", "a,b", "1,2,3,4,5,6,7,8,9"
                 ",10,11,12,13,14,15,16,17,18,19,20", "-1,-1,-1,-1,-1,-1,-1,-1"]
LIST_KEYS = {"layers", "from", "anchors", "mask", "steps", "scales", "route", "counters_per_class"}
SIZE_ATTACKS = [("net", "width", "65536"), ("net", "height", "65536"),
                ("net", "width", "0"), ("net", "channels", "0"), ("net", "channels", "100000"),
                ("net", "batch", "0"), ("net", "subdivisions", "0"), ("net", "batch", "-1"),
                ("convolutional", "filters", "100000000"), ("convolutional", "filters", "0"),
                ("convolutional", "size", "0"), ("convolutional", "size", "2000000000"),
                ("convolutional", "stride", "0"), ("convolutional", "groups", "0"),
                ("convolutional", "groups", "3"), ("convolutional", "dilation", "0"),
                ("convolutional", "pad", "-5"), ("convolutional", "padding", "-100"),
                ("maxpool", "size", "0"), ("maxpool", "stride", "0"),
                ("maxpool", "size", "2000000000"), ("yolo", "classes", "0"),
                ("yolo", "classes", "-1"), ("yolo", "num", "0"), ("yolo", "num", "100000"),
                ("yolo", "mask", "0,1,99"), ("yolo", "anchors", "1,2,3"),
                ("upsample", "stride", "0"), ("upsample", "stride", "1000"),
                ("route", "layers", ""), ("route", "layers", "0"), ("route", "layers", "100"),
                ("route", "groups", "0"), ("route", "group_id", "5"),
                ("shortcut", "from", ""), ("shortcut", "from", "0"),
                ("csp", "blocks", "2000000000"), ("csp", "split", "0"), ("csp", "split", "1"),
                ("csp", "split", "nan"), ("csp", "filters", "0"), ("csp", "growth_rate", "0"),
                ("csp", "block", "bogus"), ("efm", "layers", ""), ("efm", "layers", "1000"),
                ("efm", "maxout", "0"), ("efm", "maxout", "3"), ("maxout", "k", "0"),
                ("maxout", "k", "3"), ("maxout", "out_channels", "-1"), ("prn", "from", "0"),
                ("prn", "channels", "7"), ("prn", "from", ""), ("sam", "from", "5"),
                ("partial_transition", "route", ""), ("partial_transition", "filters", "0"),
                ("partial_transition", "pool", "bogus")]


def _sections(lines: list[bytes]) -> list[tuple[int, int]]:
    """(start, end) line spans of the sections."""
    starts = [i for i, ln in enumerate(lines) if ln.strip().startswith(b"[")]
    return [(s, e) for s, e in zip(starts, starts[1:] + [len(lines)])]


def _kv_lines(lines: list[bytes]) -> list[int]:
    return [i for i, ln in enumerate(lines) if b"=" in ln and not ln.lstrip().startswith(b"#")]


def mutate_cfg(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    """One to three hostile edits of a cfg; returns (bytes, description)."""
    lines = text.split(b"\n")
    done: list[str] = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.choice(["value", "value", "size", "size", "size", "delete-line", "dup-section",
                         "drop-header", "swap", "unknown-section", "no-equals", "dup-key",
                         "truncate", "bom", "non-utf8", "nul", "crlf", "empty", "long-line",
                         "deep", "self-ref", "add-key"])
        kv = _kv_lines(lines)
        spans = _sections(lines)
        if op == "value" and kv:
            i = rng.choice(kv)
            key = lines[i].split(b"=", 1)[0].strip()
            value = rng.choice(HOSTILE_LISTS if key.decode(errors="replace") in LIST_KEYS
                               else HOSTILE_INTS + HOSTILE_FLOATS)
            lines[i] = key + b"=" + value.encode()
            done.append(f"{key.decode(errors='replace')}={value}")
        elif op == "size" and spans:
            section, key, value = rng.choice(SIZE_ATTACKS)
            targets = [(s, e) for s, e in spans
                       if lines[s].strip().lower() == f"[{section}]".encode()]
            if not targets:
                continue
            s, e = rng.choice(targets)
            for j in range(s + 1, e):
                if lines[j].split(b"=", 1)[0].strip() == key.encode():
                    lines[j] = f"{key}={value}".encode()
                    break
            else:
                lines.insert(s + 1, f"{key}={value}".encode())
            done.append(f"[{section}] {key}={value}")
        elif op == "delete-line" and lines:
            i = rng.randrange(len(lines))
            done.append(f"delete line {i + 1}")
            del lines[i]
        elif op == "dup-section" and spans:
            s, e = rng.choice(spans)
            where = rng.choice(spans)[0]
            lines[where:where] = lines[s:e]
            done.append(f"duplicate {lines[s].strip().decode(errors='replace')}")
        elif op == "drop-header" and spans:
            s, _ = rng.choice(spans)
            done.append(f"drop header {lines[s].strip().decode(errors='replace')}")
            del lines[s]
        elif op == "swap" and len(spans) > 2:
            (a, b), (c, d) = sorted(rng.sample(spans, 2))
            lines = lines[:a] + lines[c:d] + lines[b:c] + lines[a:b] + lines[d:]
            done.append("swap two sections")
        elif op == "unknown-section":
            i = rng.randrange(len(lines) + 1)
            lines[i:i] = [rng.choice([b"[bogus]", b"[", b"[]", b"[net", b"[[csp]]",
                                      b"[convolutional] trailing"]), b"x=1"]
            done.append("unknown section")
        elif op == "no-equals" and kv:
            i = rng.choice(kv)
            lines[i] = lines[i].split(b"=", 1)[0]
            done.append("key without '='")
        elif op == "dup-key" and kv:
            i = rng.choice(kv)
            lines.insert(i + 1, lines[i].split(b"=", 1)[0] + b"=" + rng.choice(
                HOSTILE_INTS).encode())
            done.append("duplicate key")
        elif op == "truncate":
            joined = b"\n".join(lines)
            cut = rng.randrange(len(joined) + 1)
            lines = joined[:cut].split(b"\n")
            done.append(f"truncate at byte {cut}")
        elif op == "bom":
            lines[0] = b"\xef\xbb\xbf" + lines[0]
            done.append("UTF-8 BOM")
        elif op == "non-utf8":
            i = rng.randrange(len(lines))
            lines[i] = lines[i] + rng.choice([b"\xff\xfe", b"\x80", b"\xc3", b"=\xe9t\xe9"])
            done.append(f"non-UTF-8 bytes on line {i + 1}")
        elif op == "nul":
            i = rng.randrange(len(lines))
            lines[i] = lines[i] + b"\x00"
            done.append("NUL byte")
        elif op == "crlf":
            lines = [ln + b"\r" for ln in lines]
            done.append("CRLF")
        elif op == "empty":
            lines = rng.choice([[b""], [b"   "], [b"# only a comment"], [b"[net]"]])
            done.append("empty cfg")
        elif op == "long-line":
            i = rng.randrange(len(lines))
            lines.insert(i, b"filters=" + b"9" * 100000)
            done.append("100 kB line")
        elif op == "deep":
            block = rng.choice([b"[maxpool]\nsize=1\nstride=1\n", b"[route]\nlayers=-1\n",
                                b"[shortcut]\nfrom=-1\n", b"[upsample]\nstride=2\n"])
            n = rng.choice([50, 1000])
            where = spans[-1][0] if spans else len(lines)
            lines[where:where] = (block * n).split(b"\n")
            head = block.split(b"\n")[0].decode()
            done.append(f"{n} x {head}")
        elif op == "self-ref" and spans:
            s, _ = rng.choice(spans[1:] or spans)
            index = len(spans) - 1 if rng.random() < 0.5 else spans.index((s, _)) - 1
            lines[s + 1:s + 1] = [rng.choice([b"layers=", b"from="]) + str(index).encode()]
            done.append("reference to itself / forward")
        elif op == "add-key" and spans:
            s, _ = rng.choice(spans)
            key = rng.choice(["maxpool_depth", "out_channels", "groups", "share_index",
                              "embedding_layer", "antialiasing", "weights_type", "mask",
                              "coords", "stride_x", "stride_y", "reverse", "letter_box"])
            value = rng.choice(HOSTILE_INTS)
            lines.insert(s + 1, f"{key}={value}".encode())
            done.append(f"add {key}={value}")
    return b"\n".join(lines), ", ".join(done) or "unchanged"


# ----------------------------------------------------------------------------------------------
# Generators, one per entry point: gen(rng, ctx) -> Attack


def gen_cfg(rng: random.Random, ctx: Context) -> Attack:
    names = list(ctx.cfgs)
    base = rng.choice(["tiny.cfg", "dialect.cfg", "dialect.cfg", "csppeleenet-efm.cfg"]
                      if rng.random() < 0.7 else names)
    base = base if base in ctx.cfgs else "tiny.cfg"
    text, what = mutate_cfg(rng, ctx.cfgs[base])
    files: dict[str, Content] = {"m.cfg": text}
    if rng.random() < 0.03:
        files["m.cfg"] = FIFO
        what = "cfg is a fifo"
    elif rng.random() < 0.02:
        files["m.cfg"] = DIR
        what = "cfg is a folder"
    command = rng.choice(["summary", "summary", "lower", "lower-opencv", "detect", "convert"])
    if command == "summary":
        argv = ["summary", "m.cfg"]
    elif command == "lower":
        argv = ["lower", "m.cfg", "-o", "out.cfg"]
    elif command == "lower-opencv":
        argv = ["lower", "m.cfg", "-o", "out.cfg", "--target", "opencv"]
    elif command == "detect":
        files.update({"w.weights": ctx.weights, "img.png": ctx.images["small.png"]})
        argv = ["detect", "m.cfg", "w.weights", "img.png", "--json", "out.json"]
    else:
        files["w.weights"] = ctx.weights
        argv = ["convert", "m.cfg", "w.weights", "out.pt"]
    return Attack("cfg", f"{base}: {what}", argv, files)


def mutate_weights(rng: random.Random, data: bytes) -> tuple[Content, str]:
    op = rng.choice(["truncate", "truncate", "extend", "flip", "flip", "header", "header",
                     "nan", "huge", "empty", "random", "fifo", "dir", "old-header"])
    if op == "truncate":
        cut = rng.choice([0, 1, 4, 11, 12, 16, 19, 20, 24, len(data) // 2, len(data) - 4,
                          len(data) - 1, rng.randrange(len(data))])
        return data[:cut], f"truncated to {cut} bytes"
    if op == "extend":
        n = rng.choice([1, 3, 4, 1000, 1 << 16])
        return data + bytes(rng.randrange(256) for _ in range(min(n, 4096))) * (n // 4096 + 1), \
            f"extended by about {n} bytes"
    if op == "flip":
        buf = bytearray(data)
        where = rng.choice([rng.randrange(20), rng.randrange(len(buf))])
        buf[where] ^= 1 << rng.randrange(8)
        return bytes(buf), f"bit flip at byte {where}"
    if op == "header":
        major, minor, rev = rng.choice([(0, 1, 0), (1, 0, 0), (1000, 0, 0), (-1, -1, -1),
                                        (0, 2000000000, 0), (2 ** 31 - 1, 2 ** 31 - 1, 0),
                                        (0, 2, -5)])
        seen = rng.choice([0, 2 ** 64 - 1, 2 ** 63, 12345])
        return struct.pack("<3iQ", major, minor, rev, seen) + data[20:], \
            f"header {major}.{minor}.{rev} seen {seen}"
    if op == "old-header":
        return struct.pack("<3iI", 0, 1, 0, 7) + data[20:], "0.1 header (32-bit seen)"
    if op == "nan":
        body = bytearray(data)
        value = rng.choice([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff"])
        for _ in range(rng.choice([1, 50])):
            at = 20 + 4 * rng.randrange((len(data) - 20) // 4)
            body[at:at + 4] = value
        return bytes(body), "NaN/inf values (incl. BN variances?)"
    if op == "huge":
        body = bytearray(data)
        for at in range(20, len(body), 4):
            body[at:at + 4] = struct.pack("<f", rng.choice([3e38, -3e38, 0.0, -1.0]))
        return bytes(body), "huge / zero / negative values (negative BN variance)"
    if op == "empty":
        return b"", "empty file"
    if op == "random":
        return bytes(rng.randrange(256) for _ in range(len(data))), "random bytes"
    if op == "fifo":
        return FIFO, "weights is a fifo"
    return DIR, "weights is a folder"


def gen_weights(rng: random.Random, ctx: Context) -> Attack:
    content, what = mutate_weights(rng, ctx.weights)
    files: dict[str, Content] = {"tiny.cfg": ctx.cfgs["tiny.cfg"], "w.weights": content,
                                 "img.png": ctx.images["small.png"]}
    command = rng.choice(["detect", "detect", "convert-pt", "convert-weights", "export",
                          "export-opencv", "map", "train"])
    if command == "detect":
        argv = ["detect", "tiny.cfg", "w.weights", "img.png"]
    elif command == "convert-pt":
        argv = ["convert", "tiny.cfg", "w.weights", "out.pt"]
    elif command == "convert-weights":
        argv = ["convert", "tiny.cfg", "w.weights", "out.weights",
                "--cutoff", rng.choice(["1", "2", "0", "-1", "1000000"])]
    elif command == "export":
        argv = ["export", "tiny.cfg", "w.weights", "--to", "darknet", "out"]
    elif command == "export-opencv":
        argv = ["export", "tiny.cfg", "w.weights", "--to", "opencv", "out"]
    elif command == "map":
        files.update(ctx.dataset)
        argv = ["map", "ds/obj.data", "tiny.cfg", "w.weights", "--no-coco", "--quiet"]
    else:
        argv = ["train", "tiny.cfg", "--weights", "w.weights", "--out", "run", *TINY_TRAIN]
    return Attack("weights", what, argv, files)


class Payload:
    """Unpickling this runs ``func(*args)``: with ``builtins.open`` it creates a marker file."""

    def __init__(self, func: Callable, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self):  # noqa: D105
        return self.func, self.args


def payload(marker: str, how: str = "open") -> Payload:
    """A pickled object whose loading creates ``marker`` (a relative path: the run's cwd)."""
    if how == "exec":
        return Payload(builtins.exec, (f"open({marker!r}, 'w').close()",))
    if how == "system":
        return Payload(os.system, (f"{shlex.quote(sys.executable)} -c "
                                   f"\"open({marker!r}, 'w').close()\"",))
    return Payload(builtins.open, (marker, "w"))


def torch_bytes(obj: object, legacy: bool = False) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def load_trusted(data: bytes) -> dict:
    """Load one of our own base checkpoints (weights_only: nothing runs)."""
    import torch
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


MARKER = "PWNED"


def mutate_checkpoint(rng: random.Random, data: bytes, marker: str = MARKER
                      ) -> tuple[Content, str, bool]:
    """A hostile variant of a checkpoint's bytes: (content, description, has_payload)."""
    import torch
    try:
        base = load_trusted(data)
    except Exception:   # a training checkpoint holds darkcsp objects: mutate its bytes only
        base = None
    ops = ["bomb", "bomb", "bomb-whole", "bomb-legacy", "random", "truncate", "flip", "empty",
           "fifo"]
    if base is not None:
        ops += ["dtype", "dtype", "seen", "missing", "version", "cfg", "shapes", "nan", "keys",
                "types"]
    op = rng.choice(ops)
    if op.startswith("bomb"):
        how = rng.choice(["open", "exec", "system"])
        if op == "bomb-whole":
            return torch_bytes(payload(marker, how)), f"pickle payload ({how}) as the file", True
        if base is None:
            base = {"settings": {}, "iteration": 1}
        key = rng.choice(list(base) + ["extra"])
        base[key] = {"inner": payload(marker, how)} if rng.random() < 0.5 \
            else payload(marker, how)
        return torch_bytes(base, legacy=op == "bomb-legacy"), \
            f"pickle payload ({how}) in {key!r}" + (" (legacy format)" if
                                                    op == "bomb-legacy" else ""), True
    if op in ("random", "truncate", "flip", "empty", "fifo"):
        if op == "random":
            return bytes(rng.randrange(256) for _ in range(rng.choice([10, 5000]))), \
                "random bytes", False
        if op == "truncate":
            cut = rng.randrange(len(data))
            return data[:cut], f"zip truncated to {cut} bytes", False
        if op == "flip":
            buf = bytearray(data)
            for _ in range(rng.choice([1, 10])):
                buf[rng.randrange(len(buf))] ^= 0xFF
            return bytes(buf), "flipped bytes in the zip", False
        if op == "empty":
            return b"", "empty file", False
        return FIFO, "checkpoint is a fifo", False
    assert base is not None
    state_key = next((k for k in ("state_dict", "model", "model_state") if k in base
                      and isinstance(base[k], dict)), None)
    state = base.get(state_key, {}) if state_key else {}
    what = op
    if op == "dtype" and state:
        dtype = rng.choice([torch.int32, torch.int64, torch.float16, torch.complex64,
                            torch.bool, torch.float64, torch.uint8])
        keys = list(state) if rng.random() < 0.5 else [rng.choice(list(state))]
        for k in keys:
            if isinstance(state[k], torch.Tensor):
                state[k] = state[k].to(dtype)
        what = f"state tensors as {dtype}"
    elif op == "seen":
        value = rng.choice([2 ** 63, 2 ** 64, 2 ** 200, -1, -(2 ** 63), 1.5, float("nan"), "1",
                            None])
        if "header" in base:
            base["header"] = [0, 2, 0, value]
        for k in ("seen", "iteration", "epoch", "step"):
            if k in base:
                base[k] = value
        what = f"seen/iteration {value!r}"
    elif op == "missing":
        k = rng.choice(list(base))
        del base[k]
        what = f"missing {k!r}"
    elif op == "version":
        value = rng.choice([2, 0, "1", None, 1.0, 10 ** 30])
        base["version"] = value
        base["format"] = rng.choice(["darkcsp", "darkcsp", "DarkCSP", ""])
        what = f"version {value!r}"
    elif op == "cfg" and "cfg" in base:
        text, how = mutate_cfg(rng, base["cfg"].encode() if isinstance(base["cfg"], str)
                               else TINY_CFG.encode())
        base["cfg"] = rng.choice([text.decode("utf-8", "replace"), 42, None, b"[net]"])
        what = f"embedded cfg: {how}" if isinstance(base["cfg"], str) else \
            f"cfg entry {type(base['cfg']).__name__}"
    elif op == "shapes" and state:
        k = rng.choice(list(state))
        state[k] = rng.choice([torch.zeros(0), torch.zeros(()), torch.zeros(3, 3, 3, 3, 3),
                               torch.zeros(100000, 8)])
        what = f"{k} reshaped"
    elif op == "nan" and state:
        k = rng.choice(list(state))
        if isinstance(state[k], torch.Tensor) and state[k].is_floating_point():
            state[k] = torch.full_like(state[k], rng.choice([float("nan"), float("inf")]))
        what = f"{k} NaN/inf"
    elif op == "keys" and state_key:
        base[state_key] = rng.choice([{1: torch.zeros(1)}, {"": torch.zeros(1)},
                                      {**state, "bogus.weight": torch.zeros(2)},
                                      {k: v.tolist() if isinstance(v, torch.Tensor) else v
                                       for k, v in state.items()}])
        what = "odd state_dict keys/values"
    elif op == "types":
        base = rng.choice([[], 0, "darkcsp", {"format": "darkcsp"}, {}, [base], (base,),
                           {k: None for k in base}])
        what = f"payload {type(base).__name__} {str(base)[:40]!r}"
    return torch_bytes(base), what, False


def gen_pt(rng: random.Random, ctx: Context) -> Attack:
    command = rng.choice(["convert-weights", "convert-pt", "convert-weights", "map", "detect",
                          "resume", "resume-default", "train-weights"])
    files: dict[str, Content] = {"tiny.cfg": ctx.cfgs["tiny.cfg"]}
    base = ctx.train_checkpoint if command.startswith("resume") else ctx.pt
    content, what, bomb = mutate_checkpoint(rng, base)
    target = "run/last.pt" if command == "resume-default" else "x.pt"
    files[target] = content
    if command == "convert-weights":
        argv = ["convert", "tiny.cfg", "x.pt", "out.weights"]
    elif command == "convert-pt":
        argv = ["convert", "tiny.cfg", "x.pt", "out.pt"]
    elif command == "map":
        files.update(ctx.dataset)
        argv = ["map", "ds/obj.data", "tiny.cfg", "x.pt", "--no-coco", "--quiet"]
    elif command == "detect":
        files["img.png"] = ctx.images["small.png"]
        argv = ["detect", "tiny.cfg", "x.pt", "img.png"]
    elif command == "resume":
        argv = ["train", "tiny.cfg", "--resume", "x.pt", "--out", "run2", *TINY_TRAIN]
    elif command == "resume-default":
        argv = ["train", "tiny.cfg", "--resume", "--out", "run", *TINY_TRAIN]
    else:
        argv = ["train", "tiny.cfg", "--weights", "x.pt", "--out", "run2", *TINY_TRAIN]
    # --resume rewrites the checkpoint it resumes from (run/last.pt): only the cfg is protected
    protect = ["tiny.cfg"] if command == "resume-default" else []
    return Attack("pt", what, argv, files, markers=[MARKER] if bomb else [], protect=protect)


def bomb_attacks(ctx: Context) -> list[Attack]:
    """Every checkpoint consumer fed a pickle payload (deterministic, for the test suite)."""
    attacks = []
    for command in ("convert", "map", "detect", "resume", "resume-default", "train-weights"):
        state = {"settings": {}, "iteration": 1} if command.startswith("resume") \
            else load_trusted(ctx.pt)
        state["extra"] = payload(MARKER, "open")
        files: dict[str, Content] = {"tiny.cfg": ctx.cfgs["tiny.cfg"]}
        target = "run/last.pt" if command == "resume-default" else "x.pt"
        files[target] = torch_bytes(state)
        argv = {"convert": ["convert", "tiny.cfg", "x.pt", "out.weights"],
                "map": ["map", "ds/obj.data", "tiny.cfg", "x.pt", "--no-coco", "--quiet"],
                "detect": ["detect", "tiny.cfg", "x.pt", "img.png"],
                "resume": ["train", "tiny.cfg", "--resume", "x.pt", "--out", "run2",
                           *TINY_TRAIN],
                "resume-default": ["train", "tiny.cfg", "--resume", "--out", "run",
                                   *TINY_TRAIN],
                "train-weights": ["train", "tiny.cfg", "--weights", "x.pt", "--out", "run2",
                                  *TINY_TRAIN]}[command]
        if command == "map":
            files.update(ctx.dataset)
        if command == "detect":
            files["img.png"] = ctx.images["small.png"]
        attacks.append(Attack("pt", f"pickle payload via {command}", argv, files,
                              markers=[MARKER],
                              protect=["tiny.cfg"] if command == "resume-default" else []))
    return attacks


def mutate_image(rng: random.Random, ctx: Context) -> tuple[str, Content, str]:
    """(file name, content, description) of a hostile image."""
    png = ctx.images["small.png"]
    jpg = ctx.images["small.jpg"]
    op = rng.choice(["truncate-png", "truncate-jpg", "huge-png", "huge-jpg", "random", "empty",
                     "fifo", "dir", "one-pixel", "gray", "rgba", "wrong-ext", "text",
                     "missing", "dash-name", "unicode-name", "zero-size-png", "flip"])
    if op == "truncate-png":
        cut = rng.randrange(len(png))
        return "img.png", png[:cut], f"PNG truncated to {cut} bytes"
    if op == "truncate-jpg":
        cut = rng.randrange(len(jpg))
        return "img.jpg", jpg[:cut], f"JPEG truncated to {cut} bytes"
    if op == "huge-png":
        side = rng.choice([60000, 65535, 2 ** 31 - 1])
        return "img.png", png_bytes(4, 4, declared=(side, side)), f"PNG header claims {side}^2"
    if op == "huge-jpg":
        data = bytearray(jpg)
        at = data.find(b"\xff\xc0")
        if at >= 0:
            data[at + 5:at + 9] = struct.pack(">HH", 65500, 65500)
        return "img.jpg", bytes(data), "JPEG SOF claims 65500^2"
    if op == "random":
        return rng.choice(["img.png", "img.jpg"]), bytes(rng.randrange(256) for _ in range(
            rng.choice([1, 100, 5000]))), "random bytes"
    if op == "empty":
        return "img.png", b"", "empty file"
    if op == "fifo":
        return "img.png", FIFO, "image is a fifo"
    if op == "dir":
        return "img.png", DIR, "image is a folder"
    if op == "one-pixel":
        return "img.png", png_bytes(1, 1), "1x1 image"
    if op == "gray":
        return "img.png", png_bytes(20, 10, channels=1), "grayscale"
    if op == "rgba":
        return "img.png", png_bytes(20, 10, channels=4), "RGBA"
    if op == "wrong-ext":
        return "img.png", jpg, "JPEG named .png"
    if op == "text":
        return "img.jpg", b"not an image\n", "text named .jpg"
    if op == "missing":
        return "img.png", b"", "MISSING"
    if op == "dash-name":
        return "-img.png", png, "file name starting with '-'"
    if op == "unicode-name":
        return "im\u00e9 g\u4e2d.png", png, "non-ASCII file name with a space"
    if op == "zero-size-png":
        return "img.png", png_bytes(1, 1, declared=(0, 0)), "PNG header claims 0x0"
    data = bytearray(png)
    for _ in range(rng.choice([1, 5, 50])):
        data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
    return "img.png", bytes(data), "bit flips in a PNG"


def gen_images(rng: random.Random, ctx: Context) -> Attack:
    name, content, what = mutate_image(rng, ctx)
    files: dict[str, Content] = {"tiny.cfg": ctx.cfgs["tiny.cfg"], "w.weights": ctx.weights}
    if what != "MISSING":
        files[name] = content
    else:
        what = "image does not exist"
    good = rng.choice([k for k in ctx.images])
    images = [name] if rng.random() < 0.6 else [good, name]
    if len(images) > 1:
        files[good] = ctx.images[good]
    command = rng.choice(["detect", "detect", "detect-save", "detect-letterbox", "map"])
    if command == "map":
        files.update(ctx.dataset)
        if what == "image does not exist":
            del files["ds/images/valid_000.png"]
        else:
            files["ds/images/valid_000.png"] = content
        files.pop(name, None)
        files.pop(good, None)
        argv = ["map", "ds/obj.data", "tiny.cfg", "w.weights", "--no-coco", "--quiet"]
    else:
        argv = ["detect", "tiny.cfg", "w.weights", *images, "--json", "out.json"]
        if command == "detect-save":
            argv += ["--save-dir", "shown"]
        if command == "detect-letterbox":
            argv += ["--letterbox"]
    return Attack("images", what, argv, files)


def mutate_dataset(rng: random.Random, ctx: Context) -> tuple[dict[str, Content], str, str]:
    """(files, description, kind) where kind is darknet | coco | yaml."""
    files: dict[str, Content] = dict(ctx.dataset)
    label = rng.choice([k for k in files if k.endswith(".txt") and "/images/" in k])
    W = WORK.decode()
    op = rng.choice(["classes", "classes", "names", "label", "label", "label", "list", "data",
                     "coco", "coco", "yaml", "yaml", "yaml-payload"])
    if op == "classes":
        value = rng.choice(["abc", "0", "-1", "1e9", "nan", "", "2000000000", "1.5"])
        files["ds/obj.data"] = files["ds/obj.data"].replace(b"classes = 1",
                                                            f"classes = {value}".encode())
        return files, f"classes = {value!r}", "darknet"
    if op == "names":
        how = rng.choice(["latin1", "empty", "dir", "missing", "fifo", "blank", "many"])
        files["ds/obj.names"] = {"latin1": "caf\u00e9\n\xff\n".encode("latin-1"), "empty": b"",
                                 "dir": DIR, "fifo": FIFO, "blank": b"\n\n\n",
                                 "many": b"x\n" * 100000, "missing": b""}[how]
        if how == "missing":
            del files["ds/obj.names"]
        return files, f"names file {how}", "darknet"
    if op == "label":
        row = rng.choice(["0 nan 0.5 0.1 0.1", "0 0.5 0.5 inf 0.1", "0 -0.5 0.5 0.1 0.1",
                          "0 0.5 0.5 0 0", "0 0.5 0.5 -0.2 0.1", "1.5 0.5 0.5 0.1 0.1",
                          "99 0.5 0.5 0.1 0.1", "-1 0.5 0.5 0.1 0.1", "0 0.5 0.5",
                          "0", "0 0.5 0.5 0.1 0.1 7 8", "a b c d e", "0 1e300 1e300 1e300 1e300",
                          "0 0.5 0.5 2 2", "\xff\xfe", "0,0.5,0.5,0.1,0.1",
                          "2000000000 0.5 0.5 0.1 0.1"])
        times = rng.choice([1, 1, 5000])
        files[label] = DIR if row == "0" and rng.random() < 0.1 else \
            (row + "\n").encode("latin-1") * times
        return files, f"label row {row!r} x{times}", "darknet"
    if op == "list":
        how = rng.choice(["missing-image", "blank-lines", "dir", "crlf-bom", "fifo", "empty",
                          "relative", "non-image"])
        listing = {"missing-image": f"{W}/ds/images/nope.png\n",
                   "blank-lines": f"\n\n{W}/ds/images/valid_000.png\n\n",
                   "dir": f"{W}/ds/images\n", "crlf-bom": f"\ufeff{W}/ds/images/valid_000.png"
                                                        f"\r\n",
                   "empty": "", "relative": "images/valid_000.png\n",
                   "non-image": f"{W}/ds/obj.data\n"}.get(how)
        for key in ("ds/valid.txt", "ds/train.txt"):
            files[key] = FIFO if how == "fifo" else listing.encode()
        return files, f"image list {how}", "darknet"
    if op == "data":
        how = rng.choice(["no-valid", "no-train", "garbage", "bom", "dup", "valid-dir",
                          "nonutf8", "empty"])
        text = files["ds/obj.data"]
        files["ds/obj.data"] = {
            "no-valid": b"\n".join(ln for ln in text.split(b"\n") if not ln.startswith(b"valid")),
            "no-train": b"\n".join(ln for ln in text.split(b"\n") if not ln.startswith(b"train")),
            "garbage": b"this is not a data file\n===\n",
            "bom": b"\xef\xbb\xbf" + text, "dup": text + b"classes = 7\nvalid = /nonexistent\n",
            "valid-dir": text.replace(b"valid.txt", b"images"),
            "nonutf8": text + b"names\xff = \xfe\n", "empty": b""}[how]
        return files, f".data {how}", "darknet"
    if op == "coco":
        good_image = {"id": 1, "file_name": "valid_000.png", "width": 32, "height": 32}
        how = rng.choice(["list", "no-file-name", "3-box", "neg-box", "bad-cat", "not-json",
                          "empty", "string-ids", "nan", "no-annotations", "huge-size"])
        doc: object = {"images": [good_image],
                       "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                        "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0}],
                       "categories": [{"id": 1, "name": "shape"}]}
        if how == "list":
            doc = [doc]
        elif how == "no-file-name":
            del doc["images"][0]["file_name"]  # type: ignore[index]
        elif how == "3-box":
            doc["annotations"][0]["bbox"] = [1, 2, 3]  # type: ignore[index]
        elif how == "neg-box":
            doc["annotations"][0]["bbox"] = [4, 4, -10, 0]  # type: ignore[index]
        elif how == "bad-cat":
            doc["annotations"][0]["category_id"] = 99  # type: ignore[index]
        elif how == "empty":
            doc = {}
        elif how == "string-ids":
            doc["images"][0]["id"] = "one"  # type: ignore[index]
        elif how == "nan":
            doc["annotations"][0]["bbox"] = [float("nan"), 4, float("inf"), 10]  # type: ignore
        elif how == "no-annotations":
            del doc["annotations"]  # type: ignore[union-attr]
        elif how == "huge-size":
            doc["images"][0]["width"] = 2 ** 40  # type: ignore[index]
        files["ds/images/coco.json"] = b"{not json" if how == "not-json" else \
            json.dumps(doc).encode()
        return files, f"COCO json {how}", "coco"
    if op in ("yaml", "yaml-payload"):
        how = "payload" if op == "yaml-payload" else rng.choice(
            ["names-mixed-keys", "names-int", "no-train", "bad-yaml", "nc-mismatch", "list",
             "empty", "missing-path", "names-none"])
        body = {"names-mixed-keys": "names: {0: a, x: b}\n",
                "names-int": "names: 5\n", "no-train": "names: [a]\n",
                "bad-yaml": "names: [a\n  - : :\n", "nc-mismatch": "nc: 7\nnames: [a]\n",
                "list": "- a\n- b\n", "empty": "", "missing-path": "names: [a]\n",
                "names-none": "names:\n",
                "payload": f"names: !!python/object/apply:builtins.open [{MARKER}, w]\n"}[how]
        paths = "" if how in ("no-train", "list", "empty") else \
            (f"path: {W}/nowhere\ntrain: images\nval: images\n" if how == "missing-path"
             else f"path: {W}/ds\ntrain: train.txt\nval: valid.txt\n")
        files["ds/data.yaml"] = (paths + body if how != "list" else body).encode()
        return files, f"data.yaml {how}", "yaml"
    return files, "unchanged", "darknet"


def gen_datasets(rng: random.Random, ctx: Context) -> Attack:
    files, what, kind = mutate_dataset(rng, ctx)
    files["tiny.cfg"] = ctx.cfgs["tiny.cfg"]
    files["w.weights"] = ctx.weights
    markers = [MARKER] if "payload" in what else []
    if kind == "darknet":
        command = rng.choice(["map", "map", "anchors", "anchors", "train"])
    else:
        command = "train"
    if command == "map":
        argv = ["map", "ds/obj.data", "tiny.cfg", "w.weights", "--quiet",
                *rng.choice([["--no-coco"], []])]
    elif command == "anchors":
        argv = ["anchors", "ds/obj.data", "--num", "3", "--width", "32", "--height", "32",
                "--quiet"]
    else:
        data = {"darknet": "ds/obj.data", "coco": "ds/images/coco.json",
                "yaml": "ds/data.yaml"}[kind]
        argv = ["train", "tiny.cfg", "--data", data, "--out", "run", *TINY_TRAIN]
    return Attack("datasets", what, argv, files, markers=markers)


def gen_cli_args(rng: random.Random, ctx: Context) -> Attack:
    files: dict[str, Content] = {"tiny.cfg": ctx.cfgs["tiny.cfg"], "w.weights": ctx.weights,
                                 "img.png": ctx.images["small.png"], "sub": DIR}
    files.update(ctx.dataset)
    outputs = ["sub", "tiny.cfg", "w.weights", "img.png", "nowhere/deeper/out", "", ".",
               "/dev/null", "ds/obj.data"]
    floats = ["-1", "nan", "2", "inf", "-inf", "abc", "1e309", "0", ""]
    counts = ["0", "-1", "2000000000", "abc", "1.5", "99999999999999999999"]
    command = rng.choice(["detect", "detect", "map", "anchors", "synthetic", "train", "train",
                          "convert", "export", "lower", "summary", "valid"])
    if command == "detect":
        opt, value = rng.choice([("--thresh", floats), ("--nms", floats),
                                 ("--json", outputs), ("--save-dir", outputs),
                                 ("--names", outputs + ["ds/images", "img.png"]),
                                 ("--backend", ["opencv", "onnx", "bogus"])])
        v = rng.choice(value)
        argv = ["detect", "tiny.cfg", "w.weights", "img.png", opt, v]
    elif command == "map":
        opt, value = rng.choice([("--thresh", floats), ("--iou-thresh", floats),
                                 ("--det-thresh", floats), ("--nms", floats),
                                 ("--limit", counts), ("--points", ["0", "11", "5", "-1"]),
                                 ("--json", outputs), ("--metrics-json", outputs),
                                 ("--plots", outputs)])
        v = rng.choice(value)
        argv = ["map", "ds/obj.data", "tiny.cfg", "w.weights", "--quiet", "--no-coco", opt, v]
    elif command == "anchors":
        opt, value = rng.choice([("--num", counts + ["100000"]), ("--width", counts),
                                 ("--height", counts), ("--seed", counts + ["-5"]),
                                 ("--out", outputs)])
        v = rng.choice(value)
        argv = ["anchors", "ds/obj.data", "--num", "3", "--width", "32", "--height", "32",
                "--quiet", opt, v]
    elif command == "synthetic":
        opt, value = rng.choice([("--train", counts), ("--valid", counts),
                                 ("--classes", ["0", "6", "-1", "abc"]),
                                 ("--size", ["0", "1", "-1", "65536", "3"]),
                                 ("--ext", ["", "bogus", "../x", ".png", "jpg/../../x", "txt"]),
                                 ("--seed", counts)])
        v = rng.choice(value)
        argv = ["synthetic", "newds", "--train", "2", "--valid", "1", "--size", "32", opt, v]
        if rng.random() < 0.2:
            argv[1] = rng.choice(["tiny.cfg", "img.png", "/dev/null"])
    elif command == "train":
        opt, value = rng.choice([
            ("--device", ["0", "bogus", "cuda:7", "-1", "cuda", "mps", "cpu:1"]),
            ("--batch", counts), ("--subdivisions", counts + ["3"]),
            ("--size", ["0", "-32", "33", "65536", "1"]), ("--max-batches", counts),
            ("--threads", counts), ("--workers", ["-1", "abc"]),
            ("--learning-rate", floats), ("--burn-in", counts),
            ("--set", ["garbage", "net.width=nan", "=", "yolo.classes=0", "bogus.x=1",
                       "net.batch=-1", "convolutional.filters=100000000"]),
            ("--anchors", ["1,2,3", "nan,nan", "", "0,0", "-5,-5", "auto", "abc"]),
            ("--classes", ["0", "-1", "abc", "100000"]), ("--cutoff", counts),
            ("--time-limit", floats), ("--map-images", counts), ("--map-every", counts),
            ("--save-every", counts), ("--synthetic-train", counts),
            ("--synthetic-valid", counts), ("--synthetic-classes", ["0", "6", "-1"]),
            ("--synthetic-size", ["0", "1", "-1", "65536"]), ("--seed", ["-1", "2**40"]),
            ("--out", outputs), ("--valid", outputs + ["ds/valid.txt"]),
            ("--weights", outputs), ("--resume", ["sub", "tiny.cfg", "w.weights", "nope.pt"])])
        v = rng.choice(value)
        argv = ["train", "tiny.cfg", "--out", "run", *TINY_TRAIN, opt, v]
    elif command == "convert":
        out = rng.choice(outputs + ["x.onnx", "out.weights"])
        argv = ["convert", "tiny.cfg", "w.weights", out,
                *rng.choice([[], ["--cutoff", rng.choice(counts)]])]
    elif command == "export":
        to = rng.choice(["darknet", "opencv", "onnx"])
        argv = ["export", "tiny.cfg", "w.weights", "--to", to, rng.choice(outputs)]
    elif command == "lower":
        argv = ["lower", "tiny.cfg", "-o", rng.choice(outputs),
                *rng.choice([[], ["--target", "opencv"]])]
    elif command == "summary":
        argv = ["summary", rng.choice(["sub", "nope.cfg", "", "/dev/null", "img.png",
                                       "w.weights"])]
    else:
        argv = ["valid", "ds/obj.data", "tiny.cfg", "w.weights", "--quiet",
                rng.choice(["--top", "--limit"]), rng.choice(counts)]
    return Attack("cli-args", " ".join(argv[:1] + argv[-2:]), argv, files)


OUTPUT_SAFETY = ["detect-save-dir-beside-image", "detect-json-onto-image",
                 "export-opencv-into-input-dir", "export-darknet-into-input-dir",
                 "export-onnx-onto-weights", "lower-onto-itself", "convert-onto-itself",
                 "synthetic-onto-dataset", "train-twice-same-out", "train-out-cfg-folder",
                 "anchors-out-onto-data", "map-metrics-onto-weights"]


def output_safety_attacks(ctx: Context) -> list[Attack]:
    """Commands pointed at the user's own files: none of them may change."""
    tiny, weights, png = ctx.cfgs["tiny.cfg"], ctx.weights, ctx.images["small.png"]
    dialect_weights = ctx.dialect_weights
    model = {"m/tiny.cfg": tiny, "m/tiny.weights": weights}
    if dialect_weights is not None:
        model = {"m/dialect.cfg": ctx.cfgs["dialect.cfg"], "m/dialect.weights": dialect_weights}
    cfg, wts = list(model)
    user_ds = dict(ctx.dataset)   # plus files under the names synthetic writes
    user_ds["ds/images/train_00000.png"] = png
    user_ds["ds/images/train_00000.txt"] = b"0 0.5 0.5 0.2 0.2\n"
    return [
        Attack("output-safety", "detect --save-dir into the image's own folder",
               ["detect", "tiny.cfg", "w.weights", "photos/img.png", "--save-dir", "photos"],
               {"tiny.cfg": tiny, "w.weights": weights, "photos/img.png": png}),
        Attack("output-safety", "detect --json onto the image",
               ["detect", "tiny.cfg", "w.weights", "img.png", "--json", "img.png"],
               {"tiny.cfg": tiny, "w.weights": weights, "img.png": png}),
        Attack("output-safety", "export --to opencv into the folder of its inputs",
               ["export", cfg, wts, "--to", "opencv", "m"], dict(model)),
        Attack("output-safety", "export --to darknet into the folder of its inputs",
               ["export", cfg, wts, "--to", "darknet", "m"], dict(model)),
        Attack("output-safety", "export --to onnx onto the weights",
               ["export", cfg, wts, "--to", "onnx", wts], dict(model)),
        Attack("output-safety", "lower CFG -o CFG",
               ["lower", "dialect.cfg", "-o", "dialect.cfg"],
               {"dialect.cfg": ctx.cfgs["dialect.cfg"]}),
        Attack("output-safety", "convert onto its own input",
               ["convert", "tiny.cfg", "w.weights", "w.weights", "--cutoff", "1"],
               {"tiny.cfg": tiny, "w.weights": weights}),
        Attack("output-safety", "synthetic onto an existing dataset",
               ["synthetic", "ds", "--train", "2", "--valid", "1", "--size", "32"],
               user_ds, protect=["ds/**/*"]),
        Attack("output-safety", "second train into the same --out",
               ["train", "tiny.cfg", "--out", "run", *TINY_TRAIN],
               {"tiny.cfg": tiny}, protect=["tiny.cfg", "run/**/*"],
               pre=[["train", "tiny.cfg", "--out", "run", *TINY_TRAIN]]),
        Attack("output-safety", "train --out the folder holding its cfg",
               ["train", "tiny.cfg", "--out", ".", *TINY_TRAIN],
               {"tiny.cfg": tiny.replace(b"max_batches=10", b"max_batches=10\n# user's")}),
        Attack("output-safety", "anchors --out onto the .data file",
               ["anchors", "ds/obj.data", "--num", "3", "--width", "32", "--height", "32",
                "--quiet", "--out", "ds/obj.data"], dict(ctx.dataset)),
        Attack("output-safety", "map --metrics-json onto the weights",
               ["map", "ds/obj.data", "tiny.cfg", "w.weights", "--quiet", "--no-coco",
                "--metrics-json", "w.weights"],
               {**ctx.dataset, "tiny.cfg": tiny, "w.weights": weights}),
    ]


def gen_output_safety(rng: random.Random, ctx: Context) -> Attack:
    return rng.choice(output_safety_attacks(ctx))


GENERATORS: dict[str, Callable[[random.Random, Context], Attack]] = {
    "cfg": gen_cfg, "weights": gen_weights, "pt": gen_pt, "images": gen_images,
    "datasets": gen_datasets, "cli-args": gen_cli_args, "output-safety": gen_output_safety,
}


def strategies(ctx: Context) -> dict:
    """Hypothesis strategies of attacks, one per entry point."""
    from hypothesis import strategies as st
    seeds = st.integers(0, 2 ** 32 - 1).map(random.Random)
    return {name: st.builds(gen, seeds, st.just(ctx)) for name, gen in GENERATORS.items()}


def attempt(attack: Attack, timeout: float = DEFAULT_TIMEOUT,
            memory_bytes: int = DEFAULT_MEMORY, keep: str | os.PathLike | None = None
            ) -> Outcome:
    """Run ``attack`` in a fresh temporary folder (kept under ``keep`` when it fails)."""
    with tempfile.TemporaryDirectory(prefix="darkcsp-fuzz-") as tmp:
        outcome = execute(attack, tmp, timeout=timeout, memory_bytes=memory_bytes)
        if keep is not None and outcome.verdict == "failure":
            dest = Path(keep) / Path(tmp).name
            shutil.copytree(tmp, dest, symlinks=True,
                            ignore=lambda d, names: [n for n in names if not (
                                Path(d, n).is_dir() or Path(d, n).is_file())])
            outcome.cwd = str(dest)
        return outcome


def signature(outcome: Outcome) -> str:
    """A failure's root-cause key: its reason and last stderr line, numbers and paths erased."""
    last = outcome.last_line()
    command = outcome.argv[0] if outcome.argv else ""
    if outcome.reason.startswith("input changed"):
        last = " ".join(sorted({c.rsplit(" ", 1)[-1] for c in outcome.changed}))
    elif outcome.reason.startswith("pickled"):
        last = ""
    text = f"{command} | {outcome.reason.split(':')[0]} | {last}"
    text = re.sub(r"(/[^\s:'\"]+)+", "<path>", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)[:200]
