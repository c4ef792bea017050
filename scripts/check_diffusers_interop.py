#!/usr/bin/python3
"""The diffusers half of scripts/check-diffusers-interop.ts: loads a StableDiffusionPipeline folder
written by diffuse with Hugging Face diffusers' own loaders and recomputes diffuse's outputs.

usage: /usr/bin/python3 scripts/check_diffusers_interop.py DIR OUTPUTS.safetensors [--tol 1e-4]

OUTPUTS.safetensors is what the TypeScript side wrote: the inputs it drew and diffuse's outputs
(unet.*, vae.*, text.*; the prompts in the header's metadata). Checked, each a PASS/FAIL line:
  config    DIR/unet/config.json, DIR/vae/config.json and the scheduler config hold no key that the
            diffusers class does not take (diffusers would ignore it: the file then says something
            diffusers does not do);
  weights   from_pretrained(..., torch_dtype=float32) of unet/ and vae/ reports no missing,
            unexpected or mismatched weight;
  outputs   UNet2DConditionModel(sample, timestep, encoder_hidden_states).sample, AutoencoderKL
            encode (posterior mean and log-variance) and decode, in float32: max|a-b| / max|ref|
            <= tol (ref = diffusers) is PASS;
  with transformers importable, also CLIPTokenizer ids (exactly equal), CLIPTextModel on diffuse's
  ids (last_hidden_state, pooler_output or text_embeds) and StableDiffusionPipeline.from_pretrained(DIR)
  loading; without it those lines say SKIP.
Exit status 1 on any FAIL, 2 when diffusers cannot be imported.

diffusers is the copy vendored for the benchmarks (shared/bench/vendor/diffusers-58eb52c.tar.xz,
unpacked once into ${XDG_CACHE_HOME:-~/.cache}/diffuse-bench/ by shared/bench/diffusers_bench.py,
whose stand-ins let it import on Debian's torch 1.13 without huggingface_hub / safetensors);
DIFFUSE_BENCH_DIR names another bench folder, DIFFUSERS_SRC another diffusers src/ tree. Without a
bench folder, an installed diffusers is used as it is.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.environ.get("DIFFUSE_BENCH_DIR") or os.path.join(HERE, "..", "..", "shared", "bench")
RESULTS = []  # (status, line)


def report(status, what, detail=""):
    RESULTS.append(status)
    print(f"{status:4}  {what:34} {detail}", flush=True)


def setup_diffusers():
    """The diffusers package: the vendored copy with the bench's stand-ins, else an installed one."""
    if os.path.exists(os.path.join(BENCH, "diffusers_bench.py")):
        sys.path.insert(0, os.path.abspath(BENCH))
        import diffusers_bench

        cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "diffuse-bench")
        src = diffusers_bench.diffusers_src(cache, print)
        diffusers = diffusers_bench.install_stubs(src)
        return diffusers, src, diffusers_bench.SHIMS
    try:
        import diffusers
    except ImportError as e:
        print(f"cannot import diffusers ({e}) and there is no {BENCH}/diffusers_bench.py: "
              "set DIFFUSE_BENCH_DIR to shared/bench, or install diffusers", file=sys.stderr)
        sys.exit(2)
    return diffusers, os.path.dirname(diffusers.__file__), []


def read_outputs(path):
    """The TypeScript side's file: tensors and metadata (through the bench's reader when there)."""
    try:
        import safetensors_io  # shared/bench (on sys.path after setup_diffusers)

        return safetensors_io.load(path)
    except ImportError:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def compare(name, ours, ref, tol):
    ours, ref = ours.detach().float(), ref.detach().float()
    if tuple(ours.shape) != tuple(ref.shape):
        report("FAIL", name, f"shape {list(ours.shape)} (diffuse) vs {list(ref.shape)} (diffusers)")
        return
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    rel = err / scale if scale > 0 else err
    ok = rel <= tol and ours.isfinite().all().item()
    report("PASS" if ok else "FAIL", name,
           f"{list(ref.shape)}  max|a-b| {err:.3e}  max|ref| {scale:.3e}  rel {rel:.2e}")


def check_config(cls, folder, what, config=None):
    """Keys of the folder's config that the diffusers class does not take (it would ignore them)."""
    config = config if config is not None else cls.load_config(folder)
    _, unused, _ = cls.extract_init_dict(dict(config))
    unused = {k: v for k, v in unused.items() if not k.startswith("_")}
    if unused:
        report("FAIL", f"{what} config", f"keys {cls.__name__} does not take (ignored): {json.dumps(unused)}")
    else:
        report("PASS", f"{what} config", f"every key is one {cls.__name__} takes")


def load_model(cls, folder, what, torch):
    """cls.from_pretrained in float32, with its loading report checked."""
    model, info = cls.from_pretrained(folder, torch_dtype=torch.float32, low_cpu_mem_usage=False,
                                      output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        report("FAIL", f"{what} weights", json.dumps({k: [str(x) for x in v] for k, v in bad.items()})[:2000])
    else:
        n = sum(p.numel() for p in model.parameters())
        report("PASS", f"{what} weights", f"{cls.__name__}.from_pretrained: {n:,} parameters, none missing, "
                                          "unexpected or mismatched")
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("outputs")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    diffusers, src, shims = setup_diffusers()
    import torch

    torch.set_num_threads(int(os.environ.get("DIFFUSE_INTEROP_THREADS", "1")))
    print(f"diffusers {diffusers.__version__} from {src}; torch {torch.__version__}"
          + (f"; {len(shims)} import stand-ins (shared/bench/diffusers_bench.py)" if shims else ""))
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    t, meta = read_outputs(args.outputs)
    meta = meta or {}
    root = args.dir
    with open(os.path.join(root, "model_index.json")) as f:
        index = json.load(f)
    if index.get("_class_name") != "StableDiffusionPipeline":
        sys.exit(f"{root}/model_index.json: _class_name {index.get('_class_name')!r}, expected StableDiffusionPipeline")

    # scheduler: its class exists in diffusers and takes every key
    sched_name = (index.get("scheduler") or [None, None])[1]
    sched_cls = getattr(diffusers, str(sched_name), None)
    if sched_cls is None:
        report("FAIL", "scheduler class", f"diffusers has no {sched_name!r} (model_index.json)")
    else:
        check_config(sched_cls, os.path.join(root, "scheduler"), "scheduler")
        sched_cls.from_pretrained(os.path.join(root, "scheduler"))

    with torch.no_grad():
        unet_dir = os.path.join(root, "unet")
        check_config(UNet2DConditionModel, unet_dir, "unet")
        unet = load_model(UNet2DConditionModel, unet_dir, "unet", torch)
        out = unet(t["unet.sample"], t["unet.timestep"], encoder_hidden_states=t["unet.encoder_hidden_states"]).sample
        compare("unet forward", t["unet.out"], out, args.tol)
        del unet

        vae_dir = os.path.join(root, "vae")
        check_config(AutoencoderKL, vae_dir, "vae")
        vae = load_model(AutoencoderKL, vae_dir, "vae", torch)
        dist = vae.encode(t["vae.image"]).latent_dist
        compare("vae encode: posterior mean", t["vae.mean"], dist.mean, args.tol)
        compare("vae encode: posterior logvar", t["vae.logvar"], dist.logvar, args.tol)
        compare("vae decode", t["vae.decoded"], vae.decode(t["vae.latent"]).sample, args.tol)
        del vae

        check_text(root, index, t, meta, args.tol, torch)

    fails = RESULTS.count("FAIL")
    print(f"{len(RESULTS)} checks: {RESULTS.count('PASS')} PASS, {fails} FAIL, {RESULTS.count('SKIP')} SKIP"
          f" (tolerance max|a-b|/max|ref| <= {args.tol:g})")
    sys.exit(1 if fails else 0)


def check_text(root, index, t, meta, tol, torch):
    """Tokenizer, text encoder and the whole pipeline through transformers, when it is importable."""
    try:  # (transformers >= 4.4x imports on torch 1.13 but turns its PyTorch models off)
        import transformers
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401
    except Exception as e:  # noqa: BLE001 - anything that keeps the models from importing
        for what in ("tokenizer ids", "text_encoder forward", "StableDiffusionPipeline load"):
            report("SKIP", what, f"transformers' CLIP models are not importable here ({type(e).__name__}: {e})")
        return
    prompts = json.loads(meta.get("prompts", "[]"))
    tok = transformers.CLIPTokenizer.from_pretrained(os.path.join(root, "tokenizer"))
    ref_ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
    ours = t["text.input_ids"]
    if tuple(ours.shape) == tuple(ref_ids.shape) and torch.equal(ours.long(), ref_ids.long()):
        report("PASS", "tokenizer ids", f"{len(prompts)} prompts, identical ids {list(ref_ids.shape)}")
    else:
        rows = [i for i in range(min(len(ours), len(ref_ids))) if not torch.equal(ours[i].long(), ref_ids[i].long())]
        report("FAIL", "tokenizer ids", f"shape {list(ours.shape)} vs {list(ref_ids.shape)}; differing prompts: "
               + "; ".join(f"{prompts[i]!r}: {ours[i].tolist()} vs {ref_ids[i].tolist()}" for i in rows[:3]))

    te_cls = getattr(transformers, (index.get("text_encoder") or [None, "CLIPTextModel"])[1])
    te, info = te_cls.from_pretrained(os.path.join(root, "text_encoder"), torch_dtype=torch.float32,
                                      output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    report("FAIL" if bad else "PASS", "text_encoder weights",
           json.dumps({k: [str(x) for x in v] for k, v in bad.items()})[:2000] if bad
           else f"{te_cls.__name__}.from_pretrained: none missing, unexpected or mismatched")
    out = te.eval()(t["text.input_ids"].long())
    compare("text_encoder last_hidden_state", t["text.last_hidden_state"], out.last_hidden_state, tol)
    if "text.pooler_output" in t:
        compare("text_encoder pooler_output", t["text.pooler_output"], out.pooler_output, tol)
    if "text.text_embeds" in t:
        compare("text_encoder text_embeds", t["text.text_embeds"], out.text_embeds, tol)
    del te

    try:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(root, torch_dtype=torch.float32, safety_checker=None)
        parts = ", ".join(f"{k}: {type(v).__name__}" for k, v in pipe.components.items() if v is not None)
        report("PASS", "StableDiffusionPipeline load", parts)
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        report("FAIL", "StableDiffusionPipeline load", f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
