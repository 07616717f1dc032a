"""The one conftest: fixtures shared by every test folder. Paths to the read-only reference data
live in :mod:`reference_data` (importable from any test, since this file's folder is on the path).
"""
from __future__ import annotations

import logging
from typing import Iterator

import pytest
import torch


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Torch single-threaded: faster for tiny convolutions, and quiet on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_darkcsp_loggers() -> Iterator[None]:
    """``darkcsp train`` sets its logger up for a terminal (a handler on the stderr of the
    moment, no propagation); undone after each test so the next one's caplog sees records."""
    loggers = [logging.getLogger(name) for name in ("darkcsp", "darkcsp.train")]
    saved = [(logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    yield
    for logger, (handlers, propagate, level) in zip(loggers, saved):
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
