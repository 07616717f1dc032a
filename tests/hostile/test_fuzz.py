"""Trust: no input crashes darkcsp, no user file is lost, no checkpoint runs code.

Each test feeds hostile inputs (from ``fuzzlib``'s generators) to ``python -m darkcsp`` in a
subprocess and requires a clean outcome: exit status 0, or a short error message (no traceback,
no signal, no timeout, no MemoryError); every input file byte-for-byte unchanged; no file made
by a pickled payload. Hypothesis drives the generators deterministically (``derandomize``, no
example database) with few examples, so the file stays fast; ``tools/fuzz.py --minutes N`` runs
the same generators for as long as wanted.
"""
from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzlib  # noqa: E402

TIMEOUT = 15.0   # a tiny model runs in about 1.5 s; a hang (a fifo) costs this much


def fuzz_settings(examples: int) -> settings:
    # No shrinking: every example is a subprocess, and a failure's attack is printed whole.
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="session")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> fuzzlib.Context:
    return fuzzlib.Context(tmp_path_factory.mktemp("fuzz-base"))


def check(attack: fuzzlib.Attack) -> fuzzlib.Outcome:
    with tempfile.TemporaryDirectory(prefix="darkcsp-fuzz-") as tmp:
        outcome = fuzzlib.execute(attack, tmp, timeout=TIMEOUT)
        assert outcome.verdict != "failure", f"{attack.summary()}\n{outcome.describe()}"
        assert not outcome.changed and not outcome.markers
        return outcome


# Hypothesis draws the seed of a plain random.Random: its own Random favours "simple" draws
# (random() == 0.0), which would pick the rarest branch of every generator each time.
RNG = st.integers(0, 2 ** 32 - 1).map(random.Random)


@fuzz_settings(4)
@given(rng=RNG)
def test_cfg(ctx: fuzzlib.Context, rng: random.Random) -> None:
    check(fuzzlib.gen_cfg(rng, ctx))


@fuzz_settings(4)
@given(rng=RNG)
def test_weights(ctx: fuzzlib.Context, rng: random.Random) -> None:
    check(fuzzlib.gen_weights(rng, ctx))


@fuzz_settings(3)
@given(rng=RNG)
def test_pt(ctx: fuzzlib.Context, rng: random.Random) -> None:
    check(fuzzlib.gen_pt(rng, ctx))


@pytest.mark.parametrize("consumer", ["convert", "map", "detect", "resume", "resume-default",
                                      "train-weights"])
def test_pt_payload_never_runs(ctx: fuzzlib.Context, consumer: str) -> None:
    attack = next(a for a in fuzzlib.bomb_attacks(ctx) if a.name.endswith(f"via {consumer}"))
    check(attack)


@fuzz_settings(4)
@given(rng=RNG)
def test_images(ctx: fuzzlib.Context, rng: random.Random) -> None:
    check(fuzzlib.gen_images(rng, ctx))


@fuzz_settings(4)
@given(rng=RNG)
def test_datasets(ctx: fuzzlib.Context, rng: random.Random) -> None:
    check(fuzzlib.gen_datasets(rng, ctx))


@fuzz_settings(5)
@given(rng=RNG)
def test_cli_args(ctx: fuzzlib.Context, rng: random.Random) -> None:
    check(fuzzlib.gen_cli_args(rng, ctx))


@pytest.mark.parametrize("scenario", fuzzlib.OUTPUT_SAFETY)
def test_output_safety(ctx: fuzzlib.Context, scenario: str) -> None:
    attacks = fuzzlib.output_safety_attacks(ctx)
    check(attacks[fuzzlib.OUTPUT_SAFETY.index(scenario)])


@fuzz_settings(2)
@given(rng=RNG)
def test_real_yolov3_tiny_weights(ctx: fuzzlib.Context, rng: random.Random) -> None:
    """The shared yolov3-tiny (416 x 416, 8.9 M parameters) with a damaged .weights."""
    model = fuzzlib.SHARED / "models" / "yolov3-tiny"
    if not (model / "yolov3-tiny.weights").is_file():
        pytest.skip(f"reference data {model} is not present (it ships beside the repo as "
                    "../shared)")
    data, what = fuzzlib.mutate_weights(rng, (model / "yolov3-tiny.weights").read_bytes())
    check(fuzzlib.Attack("weights", f"yolov3-tiny: {what}",
                         ["detect", "yolov3-tiny.cfg", "w.weights", "img.png"],
                         {"yolov3-tiny.cfg": (model / "yolov3-tiny.cfg").read_bytes(),
                          "w.weights": data, "img.png": ctx.images["small.png"]}))
