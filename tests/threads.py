"""Test helper: start many threads at once and collect what they raise."""

from __future__ import annotations

import threading
from typing import Any, Callable


def run_threads(n: int, target: Callable[[int], Any], *, timeout_s: float = 120) -> list[BaseException]:
    """Run ``target(i)`` in ``n`` threads released together by a barrier; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    return errors
