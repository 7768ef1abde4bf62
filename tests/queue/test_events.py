"""Wake-ups from worker threads to asyncio waiters: status changes wake all, progress only some."""

from __future__ import annotations

import asyncio
import threading

from diffusiond.queue.events import JobEvents, Subscription


async def woke(sub: Subscription, timeout: float) -> bool:
    """Whether `sub` was woken before `timeout` seconds passed."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sub.wait(timeout)
    return loop.time() - started < timeout * 0.9


def publish_from_thread(events: JobEvents, job_id: str, *, progress: bool = False) -> None:
    threading.Thread(target=events.publish, args=(job_id,), kwargs={"progress": progress}).start()


def test_progress_wakes_only_waiters_that_asked_for_it() -> None:
    events = JobEvents()
    heard: list[str] = []
    events.add_listener(heard.append)

    async def scenario() -> list[bool]:
        async with events.subscribe("j") as everything, events.subscribe("j", progress=False) as outcome:
            publish_from_thread(events, "j", progress=True)
            seen = [await woke(everything, 5.0), await woke(outcome, 0.5)]
            publish_from_thread(events, "j")
            return [*seen, await woke(everything, 5.0), await woke(outcome, 5.0)]

    assert asyncio.run(scenario()) == [True, False, True, True]
    assert heard == ["j"]  # listeners (idle workers) hear status changes only
