"""Re-export: the official reference code lives in finerank.bench.reference (the bench needs it)."""

from finerank.bench.reference import OfficialQwen3Reranker  # noqa: F401
