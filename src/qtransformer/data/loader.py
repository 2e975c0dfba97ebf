"""Batches drawn in order from one generator, assembled ahead of the learner by worker
processes (where decoding video frames costs more than a step), the same batches for any
number of workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from qtransformer.data.sampler import Batch, TransitionSampler


class _Draws(Sampler[Any]):
    """Index draws of every step, each with the generator's state right after it."""

    def __init__(
        self, sampler: TransitionSampler, batch_size: int, state: torch.Tensor, part: slice
    ) -> None:
        self.sampler, self.batch_size, self.part = sampler, batch_size, part
        self.generator = torch.Generator()
        self.generator.set_state(state)

    def __iter__(self) -> Iterator[Any]:
        while True:
            idx = self.sampler.sample_indices(self.batch_size, self.generator)
            # Plain arrays only: a tensor sent to a worker would travel as a shared file
            # descriptor, which needs a helper thread of this process to hand it over.
            yield np.asarray(idx[self.part]), self.generator.get_state().numpy()

    def __len__(self) -> int:  # endless; DataLoader only asks for it when printing
        return 2**62


class _Assemble(Dataset[Any]):
    def __init__(self, sampler: TransitionSampler) -> None:
        self.sampler = sampler

    def __getitem__(self, key: Any) -> tuple[Batch, np.ndarray]:
        idx, state = key
        return self.sampler.batch(idx), state

    def __len__(self) -> int:
        return len(self.sampler)


def _as_is(item: Any) -> Any:
    return item


class BatchStream:
    """Endless batches of ``sampler``: step ``k`` takes the ``k``-th draw of ``batch_size``
    indices from ``generator`` (its slice ``part`` on this process), exactly as drawing them
    in the training loop would.

    With ``workers > 0`` worker processes read the observations and decode the frames of the
    next ``workers * prefetch`` batches while the learner trains on this one. The generator
    passed in is then set, batch by batch, to its state after the draw of the batch just
    returned, so that a checkpoint taken now resumes exactly.
    """

    def __init__(
        self,
        sampler: TransitionSampler,
        batch_size: int,
        generator: torch.Generator,
        workers: int = 0,
        prefetch: int = 2,
        part: slice = slice(None),
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.sampler, self.batch_size, self.generator = sampler, batch_size, generator
        self.workers, self.part = workers, part
        self._it: Iterator[Any] | None = None
        if workers:
            close = getattr(sampler.images, "close", None)
            if close is not None:  # no decoder threads of ours in the processes forked next
                close()
            loader = DataLoader(
                _Assemble(sampler),
                sampler=_Draws(sampler, batch_size, generator.get_state(), part),
                batch_size=None,
                collate_fn=_as_is,
                num_workers=workers,
                prefetch_factor=prefetch,
                # Forked workers share the parent's memory maps instead of copying them.
                multiprocessing_context="fork",
            )
            self._it = iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self._it is None:
            idx = self.sampler.sample_indices(self.batch_size, self.generator)
            return self.sampler.batch(idx[self.part])
        batch, state = next(self._it)
        self.generator.set_state(torch.from_numpy(state))
        return batch

    def close(self) -> None:
        """Stop the workers (they also stop when the stream is garbage collected)."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
