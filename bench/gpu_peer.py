"""Runs the PyTorch peer (shared/bench/torch_bench.py, a CPU benchmark) on CUDA for bench/gpu.ts.

usage: python3 gpu_peer.py PATH/torch_bench.py [--no-tf32] [torch_bench options...]

The peer's own code is unchanged: tensors it makes land on the GPU (torch.set_default_device), its
torch.Generator() is a CUDA generator, and every time.perf_counter() it reads follows a
torch.cuda.synchronize(), so each timed interval covers the GPU work it queued. --no-tf32 turns
TF32 off for convolutions and matrix products (PyTorch's default uses TF32 in convolutions).
"""
import os
import runpy
import sys
import time

import torch

if len(sys.argv) < 2 or not sys.argv[1].endswith("torch_bench.py"):
    sys.exit(__doc__)
if not torch.cuda.is_available():
    sys.exit("gpu_peer.py: this PyTorch sees no CUDA device")
script = os.path.abspath(sys.argv[1])
args = sys.argv[2:]
if "--no-tf32" in args:
    args.remove("--no-tf32")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

torch.set_default_device("cuda")
_Generator = torch.Generator


class _CudaGenerator:
    def __new__(cls, *a, **k):
        return _Generator(device="cuda")


torch.Generator = _CudaGenerator
_perf_counter = time.perf_counter


def _synced_perf_counter():
    torch.cuda.synchronize()
    return _perf_counter()


time.perf_counter = _synced_perf_counter
sys.path.insert(0, os.path.dirname(script))
sys.argv = [script] + args
runpy.run_path(script, run_name="__main__")
