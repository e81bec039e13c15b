"""Run tasks on a dask.distributed cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtualize.executors.base import CallbackDispatch, Executor, Outcome, Task, run_task

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

__all__ = ["DaskExecutor"]


class DaskExecutor(Executor):
    """Run tasks on a ``dask.distributed`` cluster.

    Parameters
    ----------
    client
        The client of the cluster to use. By default the active client
        (:func:`distributed.get_client`); when there is none, a
        ``LocalCluster(processes=True, threads_per_worker=1)`` is started on the first
        :meth:`map` and shut down by :meth:`close`. A client the executor did not create is
        never closed.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> with LocalCluster(n_workers=4) as cluster, Client(cluster) as client:  # doctest: +SKIP
    ...     results = dict(DaskExecutor(client).map(parse, urls, on_error="record"))
    """

    def __init__(self, client: Client | None = None) -> None:
        self.client = client
        self._own_client: Client | None = None
        self._own_cluster: LocalCluster | None = None

    def _dispatch(self) -> _DaskDispatch:
        client = self._resolve_client()
        workers = sum(client.nthreads().values())
        return _DaskDispatch(client, max(workers, 1))

    def _resolve_client(self) -> Client:
        if self.client is not None:
            return self.client
        if self._own_client is not None:
            return self._own_client
        import distributed

        try:
            return distributed.get_client()
        except ValueError:
            pass
        cluster = distributed.LocalCluster(
            processes=True, threads_per_worker=1, dashboard_address=":0"
        )
        try:
            # Not the default client: the user's own dask code must not pick it up.
            self._own_client = distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        self._own_cluster = cluster
        return self._own_client

    def _release(self) -> None:
        client, self._own_client = self._own_client, None
        cluster, self._own_cluster = self._own_cluster, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


class _DaskDispatch(CallbackDispatch["Future[Any]"]):
    def __init__(self, client: Client, workers: int) -> None:
        super().__init__()
        self.client = client
        self.workers = workers

    def submit_one(self, task: Task) -> Future[Any]:
        return self.track(self.client.submit(run_task, task, pure=False))

    def outcome(self, handle: Future[Any]) -> Outcome:
        outcome: Outcome = handle.result()
        return outcome

    def cancel(self, handles: list[Future[Any]]) -> None:
        self.client.cancel(handles)
