"""Hunt for hostile inputs that crash ``darkcsp``, change a user's file or run pickled code.

    python tools/fuzz.py --minutes 5 [--seed S] [--report FILE] [--only cfg,pt] [--keep DIR]

Runs the generators of ``tests/hostile/fuzzlib.py`` round-robin over the entry points (cfg,
weights, pt, images, datasets, cli-args, output-safety), one ``python -m darkcsp`` subprocess per
attack, until the time is up. Prints attacks tried / ok / clean errors / failures per entry point
and the failures grouped by signature; ``--report`` writes every failure (command line, verdict,
reason, last stderr lines, seed) as JSON. ``--keep DIR`` keeps each failing attack's folder, so
its command line can be re-run there. Exit status 1 when any attack failed.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "hostile"))

import fuzzlib  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, help="first seed (default: random)")
    parser.add_argument("--report", help="JSON file for the failures")
    parser.add_argument("--only", help="comma-separated entry points "
                        f"({', '.join(fuzzlib.GENERATORS)})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per command")
    parser.add_argument("--memory-gb", type=float, default=6.0, help="RLIMIT_AS per command")
    parser.add_argument("--keep", help="keep the folders of failing attacks here")
    args = parser.parse_args(argv)

    entries = args.only.split(",") if args.only else list(fuzzlib.GENERATORS)
    unknown = [e for e in entries if e not in fuzzlib.GENERATORS]
    if unknown:
        parser.error(f"unknown entry points: {', '.join(unknown)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 32)
    keep = Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    print(f"fuzzing {', '.join(entries)} for {args.minutes:g} min from seed {seed}", flush=True)

    stats: dict[str, Counter] = {e: Counter() for e in entries}
    failures: list[dict] = []
    deadline = time.monotonic() + args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="darkcsp-fuzz-base-") as base:
        ctx = fuzzlib.Context(base)
        i = 0
        while time.monotonic() < deadline:
            entry = entries[i % len(entries)]
            attack_seed = seed + i
            i += 1
            try:
                attack = fuzzlib.GENERATORS[entry](random.Random(attack_seed), ctx)
            except fuzzlib.SetupError as exc:
                stats[entry]["setup-error"] += 1
                failures.append({"entry": entry, "seed": attack_seed, "verdict": "failure",
                                 "reason": "setup", "signature": "setup | " + str(exc)[:200],
                                 "detail": str(exc)})
                continue
            outcome = fuzzlib.attempt(attack, timeout=args.timeout,
                                      memory_bytes=int(args.memory_gb * (1 << 30)), keep=keep)
            stats[entry]["tried"] += 1
            stats[entry][outcome.verdict] += 1
            if outcome.verdict == "failure":
                failures.append({"entry": entry, "seed": attack_seed, "attack": attack.name,
                                 "command": outcome.command, "cwd": outcome.cwd,
                                 "files": {k: repr(v) if isinstance(v, fuzzlib.Special)
                                           else f"{len(v)} bytes"
                                           for k, v in attack.files.items()},
                                 "verdict": outcome.verdict, "reason": outcome.reason,
                                 "rc": outcome.rc, "seconds": round(outcome.seconds, 2),
                                 "stderr_tail": outcome.stderr_tail(8),
                                 "signature": fuzzlib.signature(outcome)})
                print(f"FAIL {attack.summary()}\n     {outcome.reason} | "
                      f"{outcome.last_line()[:160]}", flush=True)

    print(f"\n{'entry point':<15}{'tried':>7}{'ok':>7}{'clean':>7}{'failures':>10}")
    total = Counter()
    for entry in entries:
        s = stats[entry]
        total.update(s)
        print(f"{entry:<15}{s['tried']:>7}{s['ok']:>7}{s['clean-error']:>7}{s['failure']:>10}")
    print(f"{'all':<15}{total['tried']:>7}{total['ok']:>7}{total['clean-error']:>7}"
          f"{total['failure']:>10}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for f in failures:
        groups[f["signature"]].append(f)
    if groups:
        print(f"\n{len(groups)} distinct failure signatures:")
        for sig, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(items):>4} x {sig}\n         e.g. {items[0].get('command', '')}")
    if args.report:
        Path(args.report).write_text(json.dumps(
            {"seed": seed, "minutes": args.minutes,
             "stats": {e: dict(stats[e]) for e in entries},
             "failures": failures}, indent=1))
        print(f"report: {args.report}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
