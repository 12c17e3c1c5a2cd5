"""`qwen3next serve [MODEL]`: an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import signal
import threading
import time
from typing import Optional

import typer

from . import options as o
from . import ranks
from .console import note


def serve(
    model: Optional[str] = o.MODEL,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="QWEN3NEXT_API_KEY",
        help="Require `Authorization: Bearer KEY` (default: no key; or QWEN3NEXT_API_KEY)."),
    cors: Optional[str] = typer.Option(None, "--cors", help="Allow this browser origin (default: none)."),
    max_queue: int = typer.Option(16, "--max-queue", min=1, help="Requests that may wait; past it, 429."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Requests decoded together at most (1: one at a time)."),
    max_context: Optional[int] = typer.Option(None, "--max-context", min=1, help="Refuse prompts longer than this (default: the model's context)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Cast float weights: bfloat16, float16 or float32 (default: as stored)."),
    distributed: Optional[str] = o.DISTRIBUTED,
    split: Optional[str] = o.SPLIT,
):
    """Serve the model over HTTP: /v1/chat/completions, /v1/completions, /v1/models, /health.

    Requests start in arrival order; while several run, their tokens are decoded together
    in one batch (up to --max-batch). They share one prompt cache, so a client that
    resends a conversation prefills only its new tokens. SIGINT or SIGTERM stops
    taking requests, ends the running ones and exits 0.
    """
    import uvicorn

    from mlx_qwen3next.checkpoints.loading import check_dtype
    from mlx_qwen3next.server import Engine, make_app

    check_dtype(dtype)
    o.check_distributed(distributed, split)
    link = ranks.join(distributed)
    path, mdl, tokenizer = o.open_model(model, dtype, None, split)
    if not ranks.leader(link):  # the server is rank 0's; this rank runs its jobs
        from mlx_qwen3next.server.ranks import follow

        return follow(link, mdl, tokenizer, max_context)
    if link is None:
        engine = Engine(mdl, tokenizer, path.name, max_queue=max_queue, max_context=max_context,
                        max_batch=max_batch)
    else:
        from mlx_qwen3next.server.ranks import RankEngine

        engine = RankEngine(link, mdl, tokenizer, path.name, max_queue=max_queue,
                            max_context=max_context)
    app = make_app(engine, api_key=api_key, cors=cors)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=10))
    http = threading.Thread(target=server.run, name="http", daemon=True)

    def shut_down(signum, frame):
        server.should_exit = True  # no new requests; the running ones end, then it exits
        engine.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shut_down)
    http.start()
    while not server.started and http.is_alive():
        time.sleep(0.05)
    if not http.is_alive():
        raise ValueError(f"cannot listen on {host}:{port} (in use, or not this machine's)")
    note(f"serving {path.name} at http://{host}:{port}/v1"
         + (" (API key required)" if api_key else "") + "; Ctrl-C stops")
    engine.work()  # here, in the thread that loaded the model
    http.join(timeout=30)
    note("server stopped")
