#!/usr/bin/python3
"""PyTorch eager peer of `npm run bench -- engine`: times the same cases as bench/engine.ts.

usage:
  /usr/bin/python3 engine_peer.py --threads 2 --warmup 3 --iters 20 < cases.json

stdin is a JSON list of cases written by bench/engine.ts (one source of truth for the shapes):
  {"name": ..., "kind": "conv"|"matmul"|"attention"|"groupnorm", ...shape fields}
Each case is timed two ways, as engine.ts does:
  fwd      the forward pass under no_grad
  fwd_bwd  y = f(inputs); (y * R).sum().backward() with every float input requiring grad
           (grads are reset to None before each iteration, as zero_grad(set_to_none=True) does)
Reported per case and mode: median seconds and all times, the median CPU seconds of this process per
iteration (all threads: less disturbed by other processes than wall time), and per case the cores other processes
kept busy meanwhile (/proc/stat minus our own CPU time). Prints ONE JSON line on stdout:
  {"torch": "<version>", "threads": N, "cases": [{"name", "fwd": {...}, "fwd_bwd": {...}, "other_cores"}]}
The script itself does not change the allocator; run it under LD_PRELOAD=libjemalloc.so.2 etc. for the
tuned peer (shared/bench/README.md, "The peer at its best").
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def conv_case(c, gen):
    n, ch, h, w = c["x"]
    o, k, pad, stride = c["out"], c["kernel"], c["pad"], c["stride"]
    x = torch.randn(n, ch, h, w, generator=gen)
    wt = torch.randn(o, ch, k, k, generator=gen) * (1.0 / math.sqrt(ch * k * k))
    b = torch.randn(o, generator=gen) * 0.1
    return [x, wt, b], lambda x, wt, b: F.conv2d(x, wt, b, stride=stride, padding=pad)


def matmul_case(c, gen):
    m, k, n = c["m"], c["k"], c["n"]
    a = torch.randn(m, k, generator=gen)
    b = torch.randn(k, n, generator=gen) * (1.0 / math.sqrt(k))
    return [a, b], lambda a, b: a @ b


def attention_case(c, gen):
    # diffusers' Attention as UNet2D runs it: q/k/v/out projections with bias, softmax(QK^T/sqrt(d))V per head
    bsz, length, width, heads = c["batch"], c["tokens"], c["width"], c["heads"]
    d = width // heads
    x = torch.randn(bsz, length, width, generator=gen)
    ps = []
    for _ in range(4):
        ps.append(torch.randn(width, width, generator=gen) * (1.0 / math.sqrt(width)))
        ps.append(torch.randn(width, generator=gen) * 0.1)

    def f(x, wq, bq, wk, bk, wv, bv, wo, bo):
        def split(t):
            return t.reshape(bsz, length, heads, d).transpose(1, 2)

        q, k, v = split(F.linear(x, wq, bq)), split(F.linear(x, wk, bk)), split(F.linear(x, wv, bv))
        p = torch.softmax((q * (1.0 / math.sqrt(d))) @ k.transpose(-1, -2), dim=-1)
        y = (p @ v).transpose(1, 2).reshape(bsz, length, width)
        return F.linear(y, wo, bo)

    return [x, *ps], f


def groupnorm_case(c, gen):
    n, ch, h, w = c["x"]
    x = torch.randn(n, ch, h, w, generator=gen)
    g = 1.0 + 0.1 * torch.randn(ch, generator=gen)
    b = 0.1 * torch.randn(ch, generator=gen)
    return [x, g, b], lambda x, g, b: F.group_norm(x, c["groups"], g, b, eps=1e-5)


BUILDERS = {"conv": conv_case, "matmul": matmul_case, "attention": attention_case, "groupnorm": groupnorm_case}


def cpu_busy_s():
    """Busy CPU seconds of the whole machine so far (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(step, warmup, iters):
    for _ in range(warmup):
        step()
    times, cpu = [], []
    for _ in range(iters):
        c0 = own_cpu_s()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(own_cpu_s() - c0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "cpu_median_s": statistics.median(cpu),
    }


def run_case(c, warmup, iters):
    gen = torch.Generator().manual_seed(0)
    inputs, f = BUILDERS[c["kind"]](c, gen)
    with torch.no_grad():
        r = torch.randn(f(*inputs).shape, generator=gen)

    def fwd():
        with torch.no_grad():
            f(*inputs)

    leaves = [t.clone().requires_grad_(True) for t in inputs]

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        (f(*leaves) * r).sum().backward()

    t0, busy0, own0 = time.perf_counter(), cpu_busy_s(), own_cpu_s()
    res = {"name": c["name"], "fwd": timed(fwd, warmup, iters), "fwd_bwd": timed(fwd_bwd, warmup, iters)}
    other = cpu_busy_s() - busy0 - (own_cpu_s() - own0)
    res["other_cores"] = max(0.0, other / (time.perf_counter() - t0))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = json.load(sys.stdin)
    out = [run_case(c, args.warmup, args.iters) for c in cases]
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "cases": out}))


if __name__ == "__main__":
    main()
