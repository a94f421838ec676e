"""Which ``pip install "finerank[EXTRA]"`` brings which optional library.

The core install (``pip install finerank``) has the Python API, ``finerank rerank``,
``make-test-model`` and ``bench``; everything else is an extra, imported only when used. When an
optional import fails, :func:`missing_extra_hint` turns the error into the install command.
``tests/test_extras.py`` keeps :data:`EXTRAS` equal to ``pyproject.toml``.

Example:
    >>> missing_extra_hint(ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn"))
    'this needs the [server] extra (No module named \\'uvicorn\\'): pip install "finerank[server]"'
    >>> missing_extra_hint(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    True
"""

from __future__ import annotations

# extra -> {distribution on PyPI: top-level import name}
EXTRAS: dict[str, dict[str, str]] = {
    "server": {
        "fastapi": "fastapi",
        "uvicorn": "uvicorn",
        "prometheus-client": "prometheus_client",
    },
    "retrieval": {
        "qdrant-client": "qdrant_client",
        "qdrant-edge-py": "qdrant_edge",
        "bm25s": "bm25s",
        "jieba": "jieba",
        "rjieba": "rjieba",
        "pypdf": "pypdf",
        "beautifulsoup4": "bs4",
        "platformdirs": "platformdirs",
        "tqdm": "tqdm",
        "httpx": "httpx",
        "sentence-transformers": "sentence_transformers",
    },
    "ui": {"gradio": "gradio"},
    "eval": {"ranx": "ranx", "matplotlib": "matplotlib"},
    "ray": {"ray": "ray", "pyarrow": "pyarrow", "pandas": "pandas"},
}


def extra_for_module(module: str) -> str | None:
    """The extra that installs top-level module ``module`` (first match), or None."""
    top = module.split(".")[0]
    for extra, packages in EXTRAS.items():
        if top in packages.values():
            return extra
    return None


def missing_extra_hint(error: ImportError) -> str | None:
    """One line saying which extra to install for ``error``, or None if none provides it."""
    extra = extra_for_module(error.name or "")
    if extra is None:
        return None
    return f'this needs the [{extra}] extra ({error}): pip install "finerank[{extra}]"'
