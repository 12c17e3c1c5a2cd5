"""Everything that is tuned for MLX's CPU backend, and nothing else.

The model is written once, in plain MLX, for a GPU. On the CPU, loading applies
`specialise.specialise` (modules swapped by predicate, the way nn.quantize
does, and the CPU's delta-rule policy), and the package import sets up the
process (blas.py: a system OpenBLAS before mlx.core; malloc.py: glibc keeps freed
memory). Each layout here earns its place in bench/RESULTS.md. This module
imports nothing, so that blas.py can run before the first `import mlx.core`.
"""
