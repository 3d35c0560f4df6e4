"""The HTTP server over one index, or over a folder of them (`matryoshka serve INDEX | FOLDER`, or `create_app` in
your own ASGI setup): FastAPI routes (`app`) with their JSON models (`schemas`) over an `IndexService` per index
(`service`) that searches from many threads, changes one change at a time and reloads when another process
changes the index (`watch`); the indexes of a folder, created by a first add and dropped by a call (`catalog`); a
bearer token (`auth`) and per-request limits (`limits`); the command line in `cli`. The Python client is
`retrieval.remote`. Needs the `server` extra."""
