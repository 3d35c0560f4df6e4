"""Shared core: errors, file layout, the shortening codec, device and threads, the embedding model."""
