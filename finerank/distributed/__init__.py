"""Scale-out on Ray: Ray Serve replicas behind one endpoint, Ray Data batch jobs.

Nothing here is imported by ``import finerank``; Ray is an optional extra
(``pip install "finerank[ray]"``) and is imported inside the functions that need it.

- :mod:`finerank.distributed.cluster`: connect to (or start) a Ray cluster.
- :mod:`finerank.distributed.batch_rerank`: ``finerank batch rerank`` (resumable Ray Data job).
- :mod:`finerank.distributed.batch_index`: ``finerank batch index`` (parallel chunk + embed).
- :mod:`finerank.distributed.serve`: ``finerank serve --ray`` (Ray Serve FastAPI ingress).

Example:
    >>> import finerank.distributed
    >>> "ray" in finerank.distributed.__doc__
    True
"""
