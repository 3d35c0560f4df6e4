"""The HTTP server over one index (`matryoshka serve INDEX`, or `create_app` in your own ASGI setup): FastAPI
routes (`app`) with their JSON models (`schemas`) over an `IndexService` (`service`) that searches from many
threads, changes one change at a time and reloads when another process changes the index (`watch`); a bearer
token (`auth`) and per-request limits (`limits`); the command line in `cli`. Needs the `server` extra."""
