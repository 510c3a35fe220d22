"""Dynamic batching: each caller gets its own answer, a lone request waits no longer than the
window, and an identity removed in SQL is not answered after the poll, under concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.api.batching import MicroBatcher
from pipelines.api.settings import ApiSettings
from pipelines.services.enrolment import remove_identity
from pipelines.services.identification import Identifier
from pipelines.services.runtime import Runtime
from tests.api.support import Keys, Prepared, state_of


@pytest.mark.parametrize("seed", range(8))
def test_every_caller_gets_its_own_answer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, max_size = int(rng.integers(20, 80)), int(rng.integers(1, 9))
    arrivals = rng.exponential(0.0008, size=n).cumsum()  # around the 1 ms window
    keys = rng.integers(0, 3, size=n).tolist()
    batches: list[tuple[int, list[int]]] = []

    async def run(key: int, items: list[int]) -> list[tuple[int, int]]:
        batches.append((key, list(items)))
        await asyncio.sleep(float(rng.uniform(0, 0.002)))  # batches overlap
        return [(key, item * 7) for item in reversed(items)][::-1]

    async def main() -> list[tuple[int, int]]:
        batcher = MicroBatcher(run, window=0.001, max_size=max_size)
        t0 = asyncio.get_running_loop().time()

        async def call(i: int) -> tuple[int, int]:
            await asyncio.sleep(max(0.0, t0 + arrivals[i] - asyncio.get_running_loop().time()))
            return await batcher.submit(keys[i], i)

        return list(await asyncio.gather(*(call(i) for i in range(n))))

    answers = asyncio.run(main())
    assert answers == [(keys[i], i * 7) for i in range(n)]
    assert sorted(i for _, items in batches for i in items) == list(range(n))
    assert all(len(items) <= max_size for _, items in batches)
    assert all(keys[i] == key for key, items in batches for i in items)
    assert any(len(items) > 1 for _, items in batches) or max_size == 1


def test_a_lone_request_is_not_delayed_and_none_waits_longer_than_the_window() -> None:
    busy = {0: 0.3, 10: 0.03}  # seconds the batch holding this item takes

    async def run(key: str, items: list[int]) -> list[int]:
        await asyncio.sleep(max(busy.get(i, 0.0) for i in items))
        return items

    async def waits(window: float, first: int, gap: float) -> tuple[float, float]:
        """Seconds the second request (sent ``gap`` after the first) waited for its answer,
        and the first's."""
        batcher = MicroBatcher(run, window=window, max_size=8)

        async def timed(item: int, delay: float) -> float:
            await asyncio.sleep(delay)
            t0 = time.perf_counter()
            assert await batcher.submit("k", item) == item
            return time.perf_counter() - t0

        a, b = await asyncio.gather(timed(first, 0.0), timed(1, gap))
        return b, a

    window = 0.05
    # Alone: answered at once, not after the window.
    assert asyncio.run(waits(window, 2, 0.0))[0] < window / 2
    # Behind a long batch: it goes when the window closes, beside the long one.
    second, first = asyncio.run(waits(window, 0, 0.01))
    assert window * 0.9 <= second < window + 0.03 and first >= 0.3, (second, first)
    # Behind a short batch: it goes as soon as that is answered, before the window closes.
    second, _ = asyncio.run(waits(0.5, 10, 0.005))
    assert 0.02 <= second < 0.2, second


def test_a_failed_batch_fails_each_of_its_callers_and_not_the_next() -> None:
    async def run(key: str, items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("boom")
        return items

    async def main() -> tuple[list[object], int]:
        batcher = MicroBatcher(run, window=0.005, max_size=8)
        first = await asyncio.gather(
            *(batcher.submit("k", i) for i in range(3)), return_exceptions=True
        )
        return list(first), await batcher.submit("k", 5)

    first, later = asyncio.run(main())
    assert all(isinstance(e, ValueError) for e in first) and later == 5


def test_settings_are_checked() -> None:
    async def run(key: str, items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="max_size"):
        MicroBatcher(run, window=0.001, max_size=0)


def test_concurrent_searches_share_index_calls_and_never_answer_a_removed_identity(
    client: TestClient, keys: Keys, rt: Runtime, prepared: Prepared
) -> None:
    """A removal made elsewhere (SQL only, as another process): answers that started one poll
    after it never name the identity, while 8 clients search without pause."""
    state = state_of(client)
    state.jobs.stop()  # no new index: the served one keeps the victim's vectors
    ident = Identifier(rt)
    victim = "person_0002"
    vectors = ident.embed_paths(sorted((prepared.gallery / victim).glob("*.png"))).vectors
    bodies = [{"embedding": v.tolist(), "top_k": 3} for v in vectors]
    poll = state.live.poll_seconds
    removed_at: list[float] = []
    answers: list[tuple[float, set[str]]] = []
    stop = threading.Event()
    batches_before = state.queries.searches.batches

    def worker(w: int) -> None:
        i = w
        while not stop.is_set():
            t0 = time.perf_counter()
            r = client.post("/v1/search", headers=keys.read, json=bodies[i % len(bodies)])
            assert r.status_code == 200, r.text
            answers.append((t0, {c["identity"] for c in r.json()["candidates"]}))
            i += 1

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(worker, w) for w in range(8)]
        time.sleep(0.5)
        remove_identity(rt, victim)
        removed_at.append(time.perf_counter())
        time.sleep(max(1.0, 5 * poll))
        stop.set()
        for f in futures:
            f.result()
    t_removed = removed_at[0]
    before = [names for t, names in answers if t < t_removed]
    late = [names for t, names in answers if t > t_removed + 2 * poll]
    assert sum(victim in names for names in before) > 0  # the probes did find the victim
    assert len(late) > 50 and not any(victim in names for names in late)
    searches = state.queries.searches
    assert searches.batches - batches_before < len(answers)  # some batches held several


def test_compute_runs_on_pinned_threads_and_stops_with_the_app(
    rt: Runtime, api_settings: ApiSettings
) -> None:
    """The service's CPU work runs on at most ``compute_slots`` threads of its own, each with
    faiss' thread count pinned to ``search_threads``; they go when the app stops."""
    import faiss

    from pipelines.api.app import create_app

    def where() -> tuple[str, int]:
        return threading.current_thread().name, faiss.omp_get_max_threads()

    with TestClient(create_app(api_settings=api_settings, runtime=rt)) as client:
        state = client.app.state.siamid  # type: ignore[attr-defined]
        seen = {client.portal.call(state.compute, where) for _ in range(8)}  # type: ignore[union-attr]
        assert all(name.startswith("siamid-compute") for name, _ in seen)
        assert len({name for name, _ in seen}) <= api_settings.compute_slots
        assert {n for _, n in seen} == {api_settings.search_threads}
    assert state._executor is None
