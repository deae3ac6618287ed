"""Pinned staging buffers for CUDA: each model's input batch resized straight into page-locked memory that is
allocated once per run, instead of a stacked array copied into a fresh pinned tensor every batch.

A ring of SLOTS buffers per model. Why three are enough: the job launches batch b (its copy to the GPU is
queued), then collects batch b-1 (which waits for the GPU's work up to it); the reader fills batch b+1 during
this and batch b+2 only once the job has taken b+1, that is after b-1 was collected. So the slot being filled
is never the one of a batch whose copy may still be running. Elsewhere (CPU, pin_memory off) the models'
own ``input_batch`` is used, unchanged."""

from __future__ import annotations

import numpy as np

from cellsearch_gui.core.embedding.runner import ModelRunner

SLOTS = 3


class StagingRing:
    """Reusable input buffers of one model: uint8 B x S x S x 3, pinned when the model's runner pins."""

    def __init__(self, runner: ModelRunner, slots: int = SLOTS):
        self.runner, self.slots = runner, slots
        self.buffers: list = []
        self.next = 0

    def _buffer(self, n: int):
        import torch

        size = self.runner.spec.input_size
        rows = max(n, self.runner.batch_size)
        if not self.buffers or self.buffers[0].shape[0] < rows:  # first use, or a larger batch than planned
            self.buffers = [torch.empty((rows, size, size, 3), dtype=torch.uint8, pin_memory=self.runner.pin_memory)
                            for _ in range(self.slots)]
        buffer = self.buffers[self.next]
        self.next = (self.next + 1) % self.slots
        return buffer

    def input_batch(self, images: list[np.ndarray]):
        """The same values as ``runner.input_batch(images)``, written into the next buffer of the ring."""
        buffer = self._buffer(len(images))
        recipe = self.runner.recipe
        for row, image in enumerate(images):
            buffer[row].numpy()[...] = recipe.resize(image)
        return buffer[: len(images)]


class Staging:
    """The rings of a run's models, made on first use; a plain ``input_batch`` where nothing is pinned."""

    def __init__(self):
        self.rings: dict[str, StagingRing] = {}

    def input_batch(self, runner: ModelRunner, images: list[np.ndarray]):
        if not runner.pin_memory:
            return runner.input_batch(images)
        ring = self.rings.get(runner.spec.id)
        if ring is None or ring.runner is not runner:
            ring = self.rings[runner.spec.id] = StagingRing(runner)
        return ring.input_batch(images)
