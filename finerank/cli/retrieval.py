"""``finerank index``, ``finerank search`` and ``finerank collections``: two-stage retrieval.

Commands run in-process against Qdrant (embedded in ``--data-dir`` / the user data dir, or a
server with ``--qdrant-url``). Flags override ``FINERANK_*`` settings; the store, embedder and
reranker are built by :class:`~finerank.runtime.Runtime` like everywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import cli_settings, friendly_errors

collections_app = typer.Typer(help="List, delete or migrate collections.", no_args_is_help=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Embedded Qdrant data dir \\[user data dir].")
]
QdrantUrl = Annotated[
    str | None, typer.Option("--qdrant-url", help="Qdrant server or cluster URL.")
]
QdrantKey = Annotated[str | None, typer.Option("--qdrant-api-key", help="Qdrant API key.")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.add_typer(collections_app, name="collections")


def _runtime(**flags):
    """The runtime of these flags (``None`` = not given: ``FINERANK_*`` or the default); the
    store is always part of it (the user data directory by default)."""
    from finerank.retrieval.store import default_data_dir
    from finerank.runtime import Runtime, store_configured

    settings = cli_settings(**flags)
    if not store_configured(settings):
        settings = settings.model_copy(update={"data_dir": default_data_dir()})
    return Runtime(settings)


@friendly_errors
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to index.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    chunker: Annotated[
        str, typer.Option(help="legal | markdown | window (sentence windows).")
    ] = "window",
    embedding_model: Annotated[
        str | None,
        typer.Option(help="Embedding model dir, hub id or http(s) endpoint; none: BM25 only."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Window/markdown chunk size in tokens \\[256 / 512].")
    ] = None,
    overlap: Annotated[
        float | None, typer.Option(help="Window overlap fraction \\[0.125].")
    ] = None,
    max_chars: Annotated[
        int | None, typer.Option(help="Legal: split articles longer than this \\[1200].")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Chunks embedded and written at once.")] = 64,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    data_dir: DataDir = None,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantKey = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Chunk, embed and index files into a collection (re-running adds only what changed)."""
    from finerank.retrieval.chunkers import get_chunker
    from finerank.retrieval.ingest import ingest

    runtime = _runtime(
        embedding_model=embedding_model,
        device=device,
        data_dir=data_dir,
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
    )
    options = {"max_tokens": max_tokens, "overlap": overlap, "max_chars": max_chars}
    allowed = {
        "legal": ("max_chars",),
        "markdown": ("max_tokens", "overlap"),
        "window": ("max_tokens", "overlap"),
    }.get(chunker, ())
    for key, value in options.items():
        if value is not None and key not in allowed:
            raise typer.BadParameter(f"--{key.replace('_', '-')} does not apply to {chunker}")
    chunker_obj = get_chunker(chunker, **{k: v for k, v in options.items() if v is not None})
    with runtime:
        embedder = runtime.embedder() if runtime.has("embedder") else None
        report = ingest(
            paths,
            store=runtime.store(),
            collection=collection,
            chunker=chunker_obj,
            embedder=embedder,
            batch_size=batch_size,
            progress=not quiet,
            min_free_bytes=runtime.settings.min_free_disk_mb * 1024 * 1024,
        )
    typer.echo(f"{collection}: {report.summary()}")
    if report.empty_files:
        typer.secho(
            f"{len(report.empty_files)} files gave no chunks (e.g. {report.empty_files[0]})",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if embedder is None:
        typer.secho(
            "no --embedding-model: BM25 only (search with --mode bm25)",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _parse_filters(values: list[str] | None) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for value in values or []:
        key, sep, wanted = value.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--filter {value!r}: use key=value")
        filters.setdefault(key.strip(), []).append(wanted.strip())
    return filters


@friendly_errors
def search_command(
    query: Annotated[str, typer.Argument(help="The search query.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    mode: Annotated[
        str | None,
        typer.Option(
            help="bm25 | dense | hybrid | bm25+prf | hybrid+prf \\[hybrid, bm25 without vectors]."
        ),
    ] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Task instruction (reranker and Qwen3 embeddings).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Reranker \\[FINERANK_MODEL].")
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="First stage only.")] = False,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="Query embedding model \\[the one that built the collection]."),
    ] = None,
    recall_k: Annotated[int, typer.Option(help="First-stage candidates.")] = 100,
    rerank_k: Annotated[int | None, typer.Option(help="Candidates reranked \\[all].")] = None,
    top_n: Annotated[int, typer.Option("--top-n", "-n", help="Hits shown.")] = 10,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="key=value on chunk metadata or source (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    data_dir: DataDir = None,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantKey = None,
) -> None:
    """Recall candidates (BM25, dense or hybrid), rerank them, print the best."""
    from finerank.retrieval.search import SearchService

    runtime = _runtime(
        model=model,
        embedding_model=embedding_model,
        device=device,
        data_dir=data_dir,
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
    )
    filters = _parse_filters(filter_)
    with runtime:
        store = runtime.store()
        spec = store.spec(collection)
        mode = mode or ("hybrid" if spec.dimension else "bm25")
        embedder = None
        if mode not in ("bm25", "bm25+prf"):
            source = runtime.settings.embedding_model or spec.embedding_source
            if not source:
                raise typer.BadParameter(f"--mode {mode} needs --embedding-model")
            embedder = runtime.use_embedder(source)
        reranker = None
        if runtime.has("reranker") and not no_rerank:
            reranker = runtime.reranker()
        service = SearchService.from_settings(
            runtime.settings, store, embedder=embedder, reranker=reranker
        )
        response = service.search(
            collection,
            query,
            mode=mode,
            recall_k=recall_k,  # type: ignore[arg-type]
            rerank_k=rerank_k,
            top_n=top_n,
            filters=filters or None,
            instruction=instruction,
        )
    if as_json:
        typer.echo(json.dumps(response.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_hits(response, reranked=reranker is not None)
    if reranker is None and not no_rerank:
        typer.secho(
            "no reranker (--model / FINERANK_MODEL): first-stage order",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _label(hit) -> str:
    meta = hit.metadata
    if meta.get("article_cn"):
        part = f" ({meta['part']})" if meta.get("part") else ""
        law = str(meta.get("law") or "").removeprefix("中华人民共和国")
        return f"{law} {meta['article_cn']}{part}".strip()
    if meta.get("heading_path"):
        return " > ".join(meta["heading_path"])[-40:]
    return Path(hit.source.split("#")[0]).name + (
        f"#{hit.source.split('#', 1)[1]}" if "#" in hit.source else ""
    )


def _print_hits(response, *, reranked: bool) -> None:
    from finerank.cli.tables import Column, print_table

    columns = [Column("#", justify="right"), Column("1st", justify="right")]
    columns.append(Column("1st score", justify="right"))
    if reranked:
        columns.append(Column("rerank", justify="right"))
    columns.append(Column("where", shrink=2, min_width=12))
    columns.append(Column("text", shrink=1, min_width=16, max_width=60))
    rows = []
    for position, hit in enumerate(response.hits, start=1):
        row = [str(position), str(hit.first_stage_rank), f"{hit.first_stage_score:.4f}"]
        if reranked:
            row.append("-" if hit.rerank_score is None else f"{hit.rerank_score:.4f}")
        rows.append([*row, _label(hit), hit.text])
    title = f"{response.mode}: {response.candidates} candidates, {response.reranked} reranked"
    print_table(title, columns, rows)


@collections_app.command("list")
@friendly_errors
def collections_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantKey = None,
) -> None:
    """Collections with their size, embedding model and chunker."""
    runtime = _runtime(data_dir=data_dir, qdrant_url=qdrant_url, qdrant_api_key=qdrant_api_key)
    with runtime:
        store = runtime.store()
        rows = [info.to_dict() for info in store.list_collections()]
        legacy = store.legacy_collections()
    for name in legacy:
        typer.secho(
            f"{name}: old format (written by an older finerank); convert it with "
            f"`finerank collections migrate {name}`",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo(f"no collections in {store.location}")
    for row in rows:
        typer.echo(
            f"{row['name']}\t{row['points']} chunks\t"
            f"{row['embedding_model'] or 'BM25 only'}\t{row['chunker'].get('name')}"
        )


@collections_app.command("delete")
@friendly_errors
def collections_delete(
    name: Annotated[str, typer.Argument(help="Collection to delete.")],
    data_dir: DataDir = None,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantKey = None,
) -> None:
    """Delete a collection and all its chunks."""
    runtime = _runtime(data_dir=data_dir, qdrant_url=qdrant_url, qdrant_api_key=qdrant_api_key)
    with runtime:
        runtime.store().delete(name)
    typer.echo(f"deleted {name}")


@collections_app.command("migrate")
@friendly_errors
def collections_migrate(
    names: Annotated[
        list[str] | None, typer.Argument(help="Old-format collections to convert \\[all].")
    ] = None,
    keep_old: Annotated[bool, typer.Option("--keep-old", help="Keep the old SQLite copy.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Convert collections written by an older finerank (qdrant-client local mode) to Qdrant
    Edge, copying vectors and payload as they are. A collection named that is already on
    Qdrant Edge gets its document index checked against every stored chunk and rebuilt where
    it differs (chunks written straight to Qdrant, around finerank's ingest)."""
    from finerank.retrieval.documents import sync_document_index
    from finerank.retrieval.store.migrate import migrate_collection

    with _runtime(data_dir=data_dir) as runtime:
        store = runtime.store()
        legacy = store.legacy_collections()
        todo = names or legacy
        if not todo:
            typer.echo(f"no old-format collections in {store.location}")
        for name in todo:
            if name not in legacy and store.exists(name):
                changed = sync_document_index(store, name)
                typer.echo(
                    f"{name}: already on Qdrant Edge; document index checked against every "
                    f"chunk, {changed} documents rebuilt or deleted"
                )
                continue
            typer.echo(migrate_collection(store, name, keep_old=keep_old).summary())
