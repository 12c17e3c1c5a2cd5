"""The `qwen3next` command-line app (installed as mlx_qwen3next.cli): a thin Typer
layer over the library. `main()` is the console script's entry point."""
