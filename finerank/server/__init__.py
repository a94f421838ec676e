"""HTTP layer: ``create_app`` in :mod:`finerank.server.app` (imported lazily, needs the
``server`` extra)."""
