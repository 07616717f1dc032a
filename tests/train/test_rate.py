"""The figures a run prints are honest: images/s is the images trained on over the wall-clock
time of the training loop (not over summed step times), and the data-wait share beside it is the
fraction of that time spent waiting for the next batch."""
from __future__ import annotations

import re
import time

import pytest

from darkcsp.train.trainer import Trainer

from train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("single_thread")

SLEEP = 0.1  # seconds the patched loader waits before every batch


def test_printed_rate_is_images_over_the_loops_wall_time(tmp_path, monkeypatch, capsys):
    from darkcsp.cli import main

    marks: dict[str, list[float]] = {"start": [], "save_last": []}
    batches = []
    loader, save_last = Trainer._loader, Trainer._save_last

    def slow_loader(self):  # the loop starts as soon as the loader is there
        source = loader(self)

        def batches_after_a_wait():
            for batch in source:
                time.sleep(SLEEP)
                batches.append(1)
                yield batch

        marks["start"].append(time.perf_counter())
        return batches_after_a_wait()

    def timed_save_last(self):  # the last call is the first thing after the loop
        marks["save_last"].append(time.perf_counter())
        save_last(self)

    monkeypatch.setattr(Trainer, "_loader", slow_loader)
    monkeypatch.setattr(Trainer, "_save_last", timed_save_last)
    iterations, batch = 8, 8
    assert main(["train", str(tiny_cfg(tmp_path)), "--out", str(tmp_path / "run"),
                 "--max-batches", str(iterations), "--batch", str(batch), "--subdivisions",
                 "2", "--size", "64", "--workers", "0", "--no-progress", "--synthetic-train",
                 "16", "--synthetic-valid", "4", "--synthetic-size", "64", "--map-every",
                 "1000", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"([\d.]+) images/s \(wall clock, (\d+)% waiting for data\)", printed)
    assert found, printed
    rate, waiting = float(found.group(1)), int(found.group(2)) / 100
    wall = marks["save_last"][-1] - marks["start"][0]
    assert rate == pytest.approx(iterations * batch / wall, rel=0.05)
    # the loader slept SLEEP before each of the 16 batches: at least that share of the wall
    # time was waiting (how much more depends on the machine's load, so no fixed floor)
    assert len(batches) == iterations * 2
    slept = len(batches) * SLEEP / wall
    assert slept - 0.01 <= waiting <= 1.0


def test_result_carries_wall_time_rate_and_data_wait(tmp_path):
    import darkcsp

    result = darkcsp.train(str(tiny_cfg(tmp_path)), out=str(tmp_path / "api"), max_batches=3,
                           batch=4, subdivisions=1, size=64, workers=0, progress=False,
                           synthetic_train=8, synthetic_valid=4, synthetic_size=64,
                           map_every=1000, anchors="cfg")
    assert result.wall_seconds > 0 and 0 <= result.data_wait_fraction < 1
    assert result.images_per_second * result.wall_seconds == pytest.approx(3 * 4)
