from mlx_qwen3next.cli.app import main

main()
