"""The one conftest: fixtures shared by every test folder. Paths to the read-only reference data
live in :mod:`reference_data` (importable from any test, since this file's folder is on the path).
"""
from __future__ import annotations

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
