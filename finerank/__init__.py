"""finerank: exact, fast, self-hosted reranking.

Example:
    >>> from finerank import Reranker
    >>> Reranker.__name__
    'Reranker'
"""

from finerank.engine.engine import ScoreResult
from finerank.reranker import Reranker
from finerank.settings import Settings

__all__ = ["Reranker", "ScoreResult", "Settings", "__version__"]
__version__ = "0.1.0"
