"""Delta-rule prefill and decode: ours against mx.fast and mlx-lm, at the real dims.

    python bench/delta_rule.py [--lengths 512 2048 8192] [--skip-over-gb 8]

Prints two markdown tables. Prefill: wall and process-CPU milliseconds (CPU
time is the steadier figure on a shared machine) and peak memory above the
resident inputs (mx.get_peak_memory after mx.reset_peak_memory) for
reference.py, mx.fast.gated_delta_update, mlx-lm's gated_delta_update and
ours (gated_delta -> chunked). The sequential paths run once per length (they
take seconds); ours is the best of three. A sequential path whose memory,
extrapolated from the previous length, would pass --skip-over-gb is skipped
and its estimate printed instead. Decode: microseconds per call, best of 5
rounds of 50.
"""

import argparse
import platform
import time

import mlx_qwen3next  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import gated_delta as mlx_lm_gd

from mlx_qwen3next import active_blas
from mlx_qwen3next.kernels import gated_delta
from mlx_qwen3next.kernels.reference import gated_delta_reference

B, HK, HV, D = 1, 16, 32, 128


def make_inputs(T, seed=0):
    """Model-like inputs: raw a, b, A_log, dt_bias and the g, beta they give."""
    mx.random.seed(seed)
    unit = lambda x: x / mx.linalg.norm(x, axis=-1, keepdims=True)
    q = unit(mx.random.normal((B, T, HK, D))) * D**-0.5
    k = unit(mx.random.normal((B, T, HK, D)))
    v = mx.random.normal((B, T, HV, D))
    a, b = mx.random.normal((B, T, HV)), mx.random.normal((B, T, HV))
    A_log, dt_bias = mx.random.uniform(-1, 1, (HV,)), mx.random.uniform(-1, 1, (HV,))
    g = -mx.exp(A_log) * nn.softplus(a + dt_bias)
    beta = mx.sigmoid(b)
    state = mx.zeros((B, HV, D, D))
    x = dict(q=q, k=k, v=v, a=a, b=b, A_log=A_log, dt_bias=dt_bias, g=g, beta=beta,
             state=state)
    mx.eval(list(x.values()))
    return x


PATHS = {
    "reference.py": lambda x: gated_delta_reference(
        x["q"], x["k"], x["v"], x["g"], x["beta"], x["state"]),
    "mx.fast.gated_delta_update": lambda x: mx.fast.gated_delta_update(
        x["q"], x["k"], x["v"], mx.exp(x["g"]), x["beta"], x["state"]),
    "mlx-lm gated_delta_update": lambda x: mlx_lm_gd.gated_delta_update(
        x["q"], x["k"], x["v"], x["a"], x["b"], x["A_log"], x["dt_bias"], x["state"]),
    "ours (gated_delta)": lambda x: gated_delta(
        x["q"], x["k"], x["v"], x["g"], x["beta"], x["state"]),
}
FAST, OURS, SEQUENTIAL = "mx.fast.gated_delta_update", "ours (gated_delta)", "reference.py"


def measure(fn, x, repeats):
    """(best wall ms, its process CPU ms, peak MB above what was resident)."""
    best, peak = (float("inf"), 0.0), 0.0
    for _ in range(repeats):
        mx.synchronize()
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        t, c = time.perf_counter(), time.process_time()
        mx.eval(fn(x))
        best = min(best, ((time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3))
        peak = max(peak, (mx.get_peak_memory() - base) / 2**20)
    return best, peak


def prefill_table(lengths, skip_over_gb):
    rows, last = [], {}
    for T in lengths:
        x = make_inputs(T)
        got = {}
        for name, fn in PATHS.items():
            est = last.get(name)
            if est and est[1] * T / est[0] > skip_over_gb * 1024:
                got[name] = ("skip", est[1] * T / est[0], est[2] * T / est[0], None)
                continue
            (ms, cpu), mb = measure(fn, x, 3 if name == OURS else 1)
            got[name] = ("ran", mb, ms, cpu)
            last[name] = (T, mb, ms)
        rows.append((T, got))
        del x
    return rows


def print_prefill(rows):
    print("| T | path | ms | CPU ms | peak MB | ms vs mx.fast | peak vs reference.py |")
    print("|---|---|---|---|---|---|---|")
    for T, got in rows:
        fast_ms, seq_mb = got[FAST][2], got[SEQUENTIAL][1]
        for name, (how, mb, ms, cpu) in got.items():
            if how == "skip":
                print(f"| {T} | {name} | skipped (est. ~{ms:.0f}) | | est. ~{mb:.0f} | | |")
                continue
            speed = f"{fast_ms / ms:.1f}x faster" if name != FAST else "1.0x"
            if got[FAST][0] == "skip" and name != FAST:
                speed += " (vs est.)"
            print(f"| {T} | {name} | {ms:.0f} | {cpu:.0f} | {mb:.0f} | {speed} | "
                  f"{mb / seq_mb:.2f}x |")


def us_per_call(fn, x):
    for _ in range(5):
        mx.eval(fn(x))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(50):
            mx.eval(fn(x))
        best = min(best, (time.perf_counter() - t) / 50 * 1e6)
    return best


def print_decode(lengths):
    names = [OURS, FAST, "mlx-lm gated_delta_update"]
    print("| T | " + " | ".join(f"{n} (us)" for n in names) + " | mx.fast / ours |")
    print("|---|" + "---|" * (len(names) + 1))
    for T in lengths:
        x = make_inputs(T, seed=T)
        x["state"] = 0.1 * mx.random.normal(x["state"].shape)
        us = [us_per_call(PATHS[n], x) for n in names]
        print(f"| {T} | " + " | ".join(f"{u:.0f}" for u in us) + f" | {us[1] / us[0]:.1f}x |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--decode-lengths", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--skip-over-gb", type=float, default=8.0)
    args = p.parse_args()
    print(f"mlx {mx.__version__}, device {mx.default_device()}, BLAS {active_blas()}, "
          f"{platform.processor() or platform.machine()}; B {B}, Hk {HK}, Hv {HV}, "
          f"Dk = Dv = {D}, float32\n")
    load = lambda: open("/proc/loadavg").read().split()[0] if platform.system() == "Linux" else "?"
    print(f"load average at start {load()}\n")
    print_prefill(prefill_table(args.lengths, args.skip_over_gb))
    print()
    print_decode(args.decode_lengths)
    print(f"\nload average at end {load()}")


if __name__ == "__main__":
    main()
