"""How many images fit in one pipeline call, per (model, width, height), learned from out-of-memory errors.

`SDQ_BATCH_MAX` is a guess made before the first job; the device's memory decides. When a call of n images runs
out of memory the executor splits it, and without a memory of that every later full cohort of the same shape would
run out of memory again, paying a failed call each time. So the cap for that shape drops (to the largest call of it
that fitted, if smaller than n, else to n // 2), and cohorts of that shape form at most that large. It rises back
by one image after `raise_after` calls in a row at the cap succeeded (another model unloaded, a fragmented
allocator recovered), and is forgotten once back at the maximum.
"""

from __future__ import annotations

import threading

from producer.jobs import JobRequest

#: Calls in a row at the cap, all fitting, before the cap is raised by one image.
RAISE_AFTER_CALLS = 16


def _shape(request: JobRequest) -> tuple[str, int, int]:
    return (str(request.model), request.width, request.height)


class CohortCaps:
    """Images per call for each shape that ran out of memory; `max_images` for every other one."""

    def __init__(self, max_images: int, *, raise_after: int = RAISE_AFTER_CALLS) -> None:
        self.max_images = max_images
        self.raise_after = raise_after
        self._caps: dict[tuple[str, int, int], int] = {}
        self._fits: dict[tuple[str, int, int], int] = {}  # calls in a row at the cap that fitted
        self._largest: dict[tuple[str, int, int], int] = {}  # the largest call that fitted since the last failure
        self._lock = threading.Lock()  # the preparing thread reads, the executor thread writes

    def limit(self, request: JobRequest) -> int:
        """The most images a call of `request`'s shape may hold now."""
        with self._lock:
            return self._caps.get(_shape(request), self.max_images)

    def out_of_memory(self, request: JobRequest, images: int) -> int:
        """A call of `images` images of `request`'s shape ran out of memory: lower the cap; returns it."""
        shape = _shape(request)
        with self._lock:
            fitted = self._largest.pop(shape, 0)
            cap = max(1, images // 2, fitted if fitted < images else 0)
            self._caps[shape] = min(cap, self._caps.get(shape, self.max_images))
            self._fits[shape] = 0
            return self._caps[shape]

    def fitted(self, request: JobRequest, images: int) -> None:
        """A call of `images` images of `request`'s shape succeeded: after enough at the cap, raise it by one."""
        shape = _shape(request)
        with self._lock:
            self._largest[shape] = max(self._largest.get(shape, 0), images)
            cap = self._caps.get(shape)
            if cap is None or images < cap:
                return
            self._fits[shape] = self._fits.get(shape, 0) + 1
            if self._fits[shape] < self.raise_after:
                return
            self._fits[shape] = 0
            if cap + 1 >= self.max_images:
                del self._caps[shape], self._fits[shape]
            else:
                self._caps[shape] = cap + 1
