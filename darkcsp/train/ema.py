"""Darknet's ``ema_alpha``: an exponential moving average of the convolutional parameters.

Why Darknet's variant and not a generic EMA: the cfg's ``ema_alpha`` means exactly this. It
starts at iteration ``max_batches / 2`` (initialised from the live weights), then after each
step ``ema = alpha * ema + (1 - alpha) * w`` for every convolutional layer's weights, biases
and batch-norm scales (not the rolling statistics) while the iteration is below
``max_batches - 1000``; at exactly ``max_batches - 1000`` the averages are copied into the
model and training continues. ``<name>_ema.weights`` is the model with the averages in place.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from darkcsp.layers.conv import Conv


class DarknetEMA:
    """EMA state for one model; call :meth:`step` after each optimizer step."""

    def __init__(self, model, alpha: float, max_batches: int) -> None:
        self.alpha = float(alpha)
        self.start = max_batches // 2
        self.apply_at = max_batches - 1000
        self.params: list[torch.nn.Parameter] = []
        for module in model.layers:
            if isinstance(module, Conv) and not module.shared:
                self.params += list(module.parameters())
        self.shadow: list[torch.Tensor] | None = None

    @property
    def initialized(self) -> bool:
        return self.shadow is not None

    @torch.no_grad()
    def step(self, iteration: int) -> None:
        """Darknet's bookkeeping after the step that made the iteration count ``iteration``."""
        if not self.alpha or iteration < self.start:
            return
        if self.shadow is None:
            self.shadow = [p.detach().clone() for p in self.params]
        if iteration == self.apply_at:
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        elif iteration < self.apply_at:
            for p, s in zip(self.params, self.shadow):
                s.mul_(self.alpha).add_(p.detach(), alpha=1 - self.alpha)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model with the averages in place (e.g. to save ``_ema.weights``)."""
        if self.shadow is None:
            yield
            return
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        shadow = state.get("shadow")
        self.shadow = None if shadow is None else [s.clone() for s in shadow]
