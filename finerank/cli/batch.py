"""``finerank batch rerank`` and ``finerank batch index``: resumable jobs on a Ray cluster.

Both connect to ``--ray-address`` (or ``RAY_ADDRESS``, or a cluster started with
``ray start`` on this machine) and otherwise start a local one-machine Ray cluster.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from finerank.cli.common import cli_settings, friendly_errors

batch_app = typer.Typer(
    help="Batch jobs on Ray: rerank millions of pairs, index a large corpus.",
    no_args_is_help=True,
)

RayAddress = Annotated[
    str | None,
    typer.Option(help="Ray cluster (host:6379, ray://host:10001, auto) \\[RAY_ADDRESS or local]."),
]


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")


def _print_summary(summary: object, as_json: bool) -> None:
    data = asdict(summary)  # type: ignore[call-overload]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        typer.echo(f"{key:<{width}}  {value}")


@batch_app.command("rerank")
@friendly_errors
def batch_rerank_command(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="IN",
            help="Parquet file/dir or JSONL: query, document \\[, instruction, id, ...].",
        ),
    ],
    output_dir: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output directory of Parquet parts.")
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Reranker directory (on every node).")
    ] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Instruction for rows without one (Qwen3).")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per pair \\[8192].")] = None,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Token budget of one forward pass \\[16384].")
    ] = None,
    long_document: Annotated[str | None, typer.Option(help="truncate | chunk")] = None,
    max_tokens_per_doc: Annotated[int | None, typer.Option(min=1)] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")] = None,
    family: Annotated[str | None, typer.Option(help="qwen3 | seq-cls (default: detect)")] = None,
    actors: Annotated[int, typer.Option(min=1, help="Model replicas (Ray actors).")] = 1,
    cpus_per_actor: Annotated[float, typer.Option(min=0.01)] = 1.0,
    gpus_per_actor: Annotated[
        float, typer.Option(min=0.0, help="GPUs per actor (0.5 puts two on a GPU).")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per actor call.")] = 256,
    part_size: Annotated[
        int, typer.Option(min=1, help="Pairs per output part (the unit of resuming).")
    ] = 10_000,
    keep_documents: Annotated[
        bool, typer.Option(help="Copy the document column to the output.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard an earlier job in OUT.")] = False,
    ray_address: RayAddress = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Score every pair of IN on Ray; write scores and per-query ranks to OUT.

    Re-running the same command resumes: parts already in OUT are skipped."""
    from finerank.distributed.batch_rerank import Progress, batch_rerank

    settings = cli_settings(
        model=model,
        instruction=instruction,
        max_length=max_length,
        device=device,
        dtype=dtype,
        family=family,
        max_batch_tokens=max_batch_tokens,
        long_document=long_document,
    )

    def report(p: Progress) -> None:
        typer.echo(
            f"part {p.parts_done}/{p.parts_total}  {p.pairs_done:,}/{p.pairs_total:,} pairs  "
            f"{p.pairs_per_second:,.0f} pairs/s  {p.elapsed_s:,.0f}s",
            err=True,
        )

    summary = batch_rerank(
        input_path,
        output_dir,
        settings,
        part_size=part_size,
        batch_size=batch_size,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        max_tokens_per_doc=max_tokens_per_doc,
        keep_documents=keep_documents,
        overwrite=overwrite,
        ray_address=ray_address,
        progress=report,
    )
    _print_summary(summary, as_json)
    if summary.failures:
        raise typer.Exit(1)


@batch_app.command("index")
@friendly_errors
def batch_index_command(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="Files or folders.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    chunker: Annotated[str, typer.Option(help="legal | markdown | window.")] = "window",
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model dir (on every node); none: BM25 only.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Window/markdown chunk size.")] = None,
    overlap: Annotated[float | None, typer.Option(help="Window/markdown overlap.")] = None,
    max_chars: Annotated[int | None, typer.Option(help="Legal: split longer articles.")] = None,
    qdrant_url: Annotated[
        str | None, typer.Option(help="Qdrant server or cluster URL (workers write to it).")
    ] = None,
    qdrant_api_key: Annotated[str | None, typer.Option(help="Qdrant API key.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded Qdrant dir instead (the driver writes).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")] = None,
    actors: Annotated[int, typer.Option(min=1, help="Embedding model replicas.")] = 1,
    cpus_per_actor: Annotated[float, typer.Option(min=0.01)] = 1.0,
    gpus_per_actor: Annotated[float, typer.Option(min=0.0)] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Points per upsert.")] = 64,
    ray_address: RayAddress = None,
) -> None:
    """Chunk, embed and upsert a large corpus in parallel (same ids as `finerank index`)."""
    from finerank.distributed.batch_index import IndexProgress, batch_index
    from finerank.retrieval.chunkers import get_chunker

    settings = cli_settings(
        embedding_model=embedding_model,
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
    )
    options = {"max_tokens": max_tokens, "overlap": overlap, "max_chars": max_chars}
    chunker_obj = get_chunker(chunker, **{k: v for k, v in options.items() if v is not None})

    def report(p: IndexProgress) -> None:
        typer.echo(
            f"{p.written:,}/{p.pending:,} chunks written  "
            f"{p.chunks_per_second:,.0f} chunks/s  {p.elapsed_s:,.0f}s",
            err=True,
        )

    result = batch_index(
        paths,
        collection=collection,
        chunker=chunker_obj,
        settings=settings,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        batch_size=batch_size,
        ray_address=ray_address,
        progress=report,
    )
    typer.echo(f"{collection}: {result.summary()}")
