"""Matryoshka retrieval: the shared core and the storage layer that the build (indexing) and the search
(retrieval, rerank) pipelines both stand on."""
