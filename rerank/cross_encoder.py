"""The last stage: a sentence-transformers CrossEncoder reads query and document together."""
from __future__ import annotations

import numpy as np

from matryoshka.core.errors import RerankerUnavailable

DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L6-v2"


class CrossEncoderReranker:
    """Scores (query, document) pairs in batches; documents longer than the model's max length are truncated."""

    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 32, max_length: int | None = None):
        from matryoshka.core.encoder import ensure_hub_or_offline, quiet_transformers
        ensure_hub_or_offline(name_or_path)
        from sentence_transformers import CrossEncoder
        quiet_transformers()
        self.name, self.batch_size = name_or_path, batch_size
        try:
            self.model = CrossEncoder(name_or_path, device="cuda" if device == "gpu" else device,
                                      max_length=max_length)
        except Exception as e:  # noqa: BLE001 - hub, file and config errors all mean "cannot load"
            raise RerankerUnavailable(
                f"cannot load cross-encoder {name_or_path!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "pass --reranker / reranker= with a model name or local path that is available offline, "
                "or --no-rerank / rerank=False to skip the stage") from None

    def score(self, queries: list[str], docs: list[list[str]]) -> list[np.ndarray]:
        """One array of scores per query, aligned with that query's documents."""
        pairs = [(q, d) for q, ds in zip(queries, docs) for d in ds]
        if not pairs:
            return [np.zeros(0, np.float32) for _ in queries]
        flat = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                             convert_to_numpy=True), dtype=np.float32).reshape(len(pairs), -1)[:, 0]
        return np.split(flat, np.cumsum([len(ds) for ds in docs])[:-1])
