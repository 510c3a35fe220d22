"""Running a flow's chunk tasks on a Dask cluster, through prefect-dask.

``--dask ADDRESS`` sends them to an existing scheduler, ``--dask-workers N`` to a local cluster
of N worker processes with one thread each, made for the run and closed after it. The flow
itself runs here: it lists the work, submits the chunks, gathers their results and publishes
the index once. Workers open the database, files and vector store from their own ``SIAMID_*``
settings, which every chunk checks against the run's (:mod:`pipelines.services.worker`).

Task runs report to a Prefect API. Without ``PREFECT_API_URL``, flows run on a temporary API of
this process; workers on this machine are pointed at it (left alone, each worker process would
start an API of its own, which costs tens of seconds on a small machine). Workers on other
machines cannot reach it: they need a Prefect server, named by ``PREFECT_API_URL``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from prefect import Flow, Task
from prefect.context import FlowRunContext

from pipelines.services.errors import SiamidError

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

logger = logging.getLogger(__name__)


class _SlowExitFilter(logging.Filter):
    """Drops the nanny's warning about a worker process slow to exit at the end of a run (it is
    then killed, ~4 s later; its chunks were committed or are run again by the next run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "still alive after" not in record.getMessage()


def quiet_distributed() -> None:
    """distributed logs every worker start and stop at INFO; siamid's progress is enough.

    Called when a cluster is asked for, before distributed is imported (runs without a cluster
    do not pay for importing it, and importing this module changes nothing): the variable
    reaches local worker processes too. A value the user set wins.
    """
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    nanny = logging.getLogger("distributed.nanny")
    if not any(isinstance(f, _SlowExitFilter) for f in nanny.filters):
        nanny.addFilter(_SlowExitFilter())


#: Dask's nanny starts worker processes with a 64 KiB malloc trim threshold (against memory
#: fragmentation in long-lived workers). Setting it also turns off glibc's dynamic mmap
#: threshold, so every large tensor is mmap'ed and faulted in afresh: embedding on CPU ran ~30%
#: slower (153 against 214 images/s, BENCHMARKS.md). siamid's local workers keep glibc's
#: defaults; for ``dask worker`` the README gives the same setting as a Dask config file.
WORKER_CONFIG: dict[str, Any] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

P = ParamSpec("P")
R = TypeVar("R")

CONNECT_TIMEOUT_S = 10


class ClusterError(SiamidError):
    """The cluster options cannot work: no scheduler there, or no API the workers reach."""


class PrefectApiError(SiamidError):
    """``PREFECT_API_URL`` names a Prefect server that does not answer."""


#: How long to wait for the Prefect server's /health before saying it does not answer.
PREFECT_API_TIMEOUT_S = 3.0


def check_prefect_api(timeout_s: float = PREFECT_API_TIMEOUT_S) -> None:
    """Ask the configured Prefect server's ``/health`` once, before a flow starts.

    Without this, a flow against a server that is down retries its client calls for half a
    minute and ends in a traceback. Any HTTP answer counts as reachable (a cloud workspace may
    want a key for /health); only no answer is an error. No ``PREFECT_API_URL``: the flow runs
    against a temporary local server, nothing to check.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.TransportError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrefectApiError(
            f"the Prefect API at PREFECT_API_URL={url} does not answer ({reason}); start it "
            "(`prefect server start`) or unset PREFECT_API_URL to run on a temporary local one"
        ) from None


@dataclass(frozen=True)
class ClusterSpec:
    """Where chunk tasks run: the scheduler at ``address``, or ``workers`` local processes."""

    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        quiet_distributed()
        if (self.address is None) == (self.workers is None):
            raise ClusterError("give either --dask ADDRESS or --dask-workers N, not both")
        if self.workers is not None and self.workers < 1:
            raise ClusterError(f"--dask-workers must be 1 or more, got {self.workers}")
        if self.address is not None and not self.address.strip():
            raise ClusterError("--dask needs a scheduler address, e.g. tcp://host:8786")

    @classmethod
    def from_options(cls, address: str | None, workers: int | None) -> ClusterSpec | None:
        """The spec of the ``--dask`` / ``--dask-workers`` options; None: run in-process."""
        if address is None and workers is None:
            return None
        return cls(address, workers)

    @property
    def on_this_machine(self) -> bool:
        """Whether every worker runs here (a local cluster, or a scheduler on loopback)."""
        if self.address is None:
            return True
        if self.address.startswith("inproc://"):
            return True
        import distributed

        host = distributed.comm.get_address_host(distributed.comm.resolve_address(self.address))
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def task_runner(self) -> DaskTaskRunner:
        from prefect_dask import DaskTaskRunner

        if self.address is not None:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": self.workers,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            }
        )

    def check_reachable(self) -> None:
        """Connect to the scheduler once, so that a wrong address is one clear error."""
        if self.address is None:
            return
        import distributed

        try:
            with distributed.Client(self.address, timeout=CONNECT_TIMEOUT_S) as client:
                n = len(client.scheduler_info().get("workers", {}))
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {self.address}: {exc}; start one with "
                "`dask scheduler` and give its address (tcp://HOST:8786)"
            ) from None
        if n == 0:
            logger.warning("no worker has joined %s yet: chunks wait for one", self.address)


@contextlib.contextmanager
def flow_on(flow: Flow[P, R], cluster: ClusterSpec | None) -> Iterator[Flow[P, R]]:
    """``flow`` as it runs its chunk tasks on ``cluster`` (itself when None)."""
    if cluster is None:
        yield flow
        return
    import dask.config

    cluster.check_reachable()
    with _prefect_api_for(cluster), dask.config.set(WORKER_CONFIG):
        runner: Any = cluster.task_runner()  # a TaskRunner of prefect-dask's own futures
        yield flow.with_options(task_runner=runner)


@contextlib.contextmanager
def _prefect_api_for(cluster: ClusterSpec) -> Iterator[None]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield  # a server: the workers report to it (the URL travels with each task)
        return
    if not cluster.on_this_machine:
        raise ClusterError(
            f"workers of {cluster.address} on other machines report their task runs to a "
            "Prefect API: start `prefect server start --host 0.0.0.0` where they can reach it "
            "and export PREFECT_API_URL=http://THAT_HOST:4200/api before this command"
        )
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one this process's flows would start anyway
    server.start(timeout=int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def on_dask() -> bool:
    """Whether the running flow submits its tasks to a Dask cluster."""
    if "prefect_dask" not in sys.modules:  # then no task runner can be a DaskTaskRunner
        return False
    from prefect_dask import DaskTaskRunner

    ctx = FlowRunContext.get()
    return ctx is not None and isinstance(ctx.task_runner, DaskTaskRunner)


@dataclass
class Completed(Generic[R]):
    """One submitted task, done: its result, or why it failed (after its retries)."""

    n: int  # position of its arguments, from 1
    result: R | None
    error: str | None
    arguments: Mapping[str, Any] = field(default_factory=dict)  # what it was submitted with


def failure_report(
    failures: Sequence[Completed[Any]], sizes: Sequence[int]
) -> list[dict[str, object]]:
    """A flow summary's ``failed_chunks``: by chunk number, with its size and the reason."""
    return [
        {"chunk": c.n, "images": sizes[c.n - 1], "reason": c.error}
        for c in sorted(failures, key=lambda c: c.n)
    ]


def submit_all(
    task: Task[..., R], arguments: Iterable[Mapping[str, Any]]
) -> Iterator[Completed[R]]:
    """``task(**args)`` for each, on the flow's Dask cluster, yielded as they complete.

    At most twice as many tasks as the cluster has threads are submitted at a time (counted
    again as tasks complete, so workers that join later get work): the scheduler then holds a
    window of the arguments, not all of them. ``arguments`` is read as the window frees up, so
    a generator (chunks read page by page) is never listed whole. A failed task does not stop
    the others.
    """
    import distributed

    ctx = FlowRunContext.get()
    assert ctx is not None and on_dask()
    client = ctx.task_runner.client  # type: ignore[attr-defined]
    pending = enumerate(arguments, start=1)
    running: dict[str, tuple[int, Any, Mapping[str, Any]]] = {}
    done = distributed.as_completed(loop=client.loop)

    def refill() -> None:
        window = max(4, 2 * sum(client.nthreads().values()))
        while len(running) < window:
            nxt = next(pending, None)
            if nxt is None:
                return
            n, args = nxt
            future = task.submit(**args)
            running[future.wrapped_future.key] = (n, future, args)
            done.add(future.wrapped_future)

    refill()
    for finished in done:
        n, future, args = running.pop(finished.key)
        try:
            value = future.result(raise_on_failure=False)
        except Exception as exc:  # noqa: BLE001 - the Dask task itself failed (KilledWorker)
            value = exc
        del future, finished  # a result held on a worker that dies would be computed again
        if isinstance(value, BaseException):
            yield Completed(n, None, _reason(value), args)
        else:
            yield Completed(n, value, None, args)
        del args
        refill()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SiamidError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
