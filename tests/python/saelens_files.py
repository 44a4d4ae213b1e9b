"""SAE directories written the way SAELens 6.18 writes them, and SAELens's
forward of each family, in numpy: an independent writer and evaluator for
libsae's loading tests (issue 16). Nothing here comes from libsae; the file
layout follows SAELens's source (sae_lens/saes/*.py, 6.18.0):

- `SAE.save_model` / `TrainingSAE.save_inference_model`: a directory with
  sae_weights.safetensors (the module's state dict under its parameter names,
  in the parameters' dtype) and cfg.json (`json.dump(cfg.to_dict())`: the
  config dataclass's fields, "metadata": {...}, "architecture").
- Inference saves of TopK-family SAEs trained with
  rescale_acts_by_decoder_norm (the default since 6.14) hold weights already
  folded (`_fold_norm_topk`); training checkpoints (`SAETrainer.save_checkpoint`
  -> `save_model` of the training SAE) hold them unfolded, plus BatchTopK's
  `topk_threshold` (a 0-dim float64 buffer) and JumpReLU's `log_threshold`.
- BatchTopK and Matryoshka BatchTopK are saved for inference as "jumprelu"
  with `threshold = topk_threshold` in every feature.
- Transcoders (inference only in 6.18): W_dec [d_sae, d_out], b_dec [d_out],
  W_skip [d_out, d_in], cfg "d_out", "apply_b_dec_to_input": false.
- Configurations from SAELens before 6.0 have no "metadata" version and use
  "activation_fn_str" / "activation_fn_kwargs", "hook_point", ...

Usage: write_sae(path, tensors, cfg); forward(family, tensors, cfg, x).
"""

import json
import os

import numpy as np

import st_min

SAELENS_VERSION = "6.18.0"

NP_DTYPE = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def metadata(version=SAELENS_VERSION, **extra):
    """SAEMetadata as a 6.x training run fills it (LanguageModelSAERunnerConfig)."""
    meta = {
        "sae_lens_version": version,
        "sae_lens_training_version": version,
        "model_name": "gpt2",
        "hook_name": "blocks.0.hook_resid_pre",
        "hook_head_index": None,
        "context_size": 128,
        "prepend_bos": True,
        "seqpos_slice": [None],
        "model_from_pretrained_kwargs": {},
    }
    meta.update(extra)
    return meta


def inference_cfg(architecture, d_in, d_sae, **fields):
    """SAEConfig.to_dict() of an inference config (6.x layout)."""
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not architecture.endswith("transcoder"),
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    cfg.update(fields)
    cfg["metadata"] = metadata()
    cfg["architecture"] = architecture
    return cfg


def training_cfg(architecture, d_in, d_sae, **fields):
    """TrainingSAEConfig.to_dict() of a training checkpoint (6.x layout): the
    inference fields plus the training ones."""
    cfg = inference_cfg(architecture, d_in, d_sae)
    del cfg["metadata"], cfg["architecture"]
    cfg["decoder_init_norm"] = 0.1
    if architecture in ("topk", "batchtopk", "matryoshka_batchtopk"):
        cfg.update({"k": 100, "use_sparse_activations": False, "aux_loss_coefficient": 1.0,
                    "rescale_acts_by_decoder_norm": True})
    if architecture in ("batchtopk", "matryoshka_batchtopk"):
        cfg["k"] = float(cfg["k"])
        cfg["topk_threshold_lr"] = 0.01
    if architecture == "matryoshka_batchtopk":
        cfg["matryoshka_widths"] = []
    if architecture in ("standard", "gated"):
        cfg.update({"l1_coefficient": 1.0, "lp_norm": 1.0, "l1_warm_up_steps": 0})
    if architecture == "jumprelu":
        cfg.update({"jumprelu_init_threshold": 0.01, "jumprelu_bandwidth": 0.05,
                    "l0_coefficient": 1.0, "l0_warm_up_steps": 0})
    cfg.update(fields)
    cfg["metadata"] = metadata()
    cfg["architecture"] = architecture
    return cfg


def pre6_cfg(architecture, d_in, d_sae, activation="relu", k=None, **fields):
    """A configuration written by SAELens before 6.0 (5.x LanguageModelSAERunnerConfig)."""
    cfg = {
        "architecture": architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "activation_fn_str": activation,
        "activation_fn_kwargs": {"k": k} if k is not None else {},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "context_size": 128,
        "model_name": "gpt2",
        "hook_name": "blocks.0.hook_resid_pre",
        "hook_layer": 0,
        "hook_head_index": None,
        "prepend_bos": True,
        "dataset_path": "apollo-research/roneneldan-TinyStories-tokenizer-gpt2",
        "dataset_trust_remote_code": True,
        "normalize_activations": "none",
        "dtype": "float32",
        "device": "cpu",
        "sae_lens_training_version": "5.9.1",
        "neuronpedia_id": None,
        "model_from_pretrained_kwargs": {},
    }
    cfg.update(fields)
    return cfg


def write_sae(path, tensors, cfg, dtype="F32"):
    """path/sae_weights.safetensors from tensors {name: array} (0-dim arrays
    stay 0-dim; "topk_threshold" is float64 as SAELens keeps it) and
    path/cfg.json from cfg, as json.dump writes it."""
    os.makedirs(path, exist_ok=True)
    entries = []
    for name in sorted(tensors):
        value = np.asarray(tensors[name])
        dt = "F64" if name == "topk_threshold" else dtype
        raw = np.ascontiguousarray(value, dtype=NP_DTYPE[dt]).astype("<" + np.dtype(NP_DTYPE[dt]).str[1:])
        entries.append((name, dt, list(value.shape), raw.tobytes()))
    with open(os.path.join(path, "sae_weights.safetensors"), "wb") as f:
        f.write(st_min.pack(entries))
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)


def random_tensors(architecture, d_in, d_sae, rng, d_out=None, skip=False, threshold=0.3,
                   decoder_scale=None):
    """A plausible state dict of the family, every tensor nonzero (decoder rows of
    different norms: decoder_scale[i] multiplies row i when given)."""
    d_out = d_in if d_out is None else d_out
    t = {
        "W_enc": rng.normal(0, 0.5, (d_in, d_sae)),
        "W_dec": rng.normal(0, 0.5, (d_sae, d_out)),
        "b_dec": rng.normal(0, 0.2, d_out),
    }
    if decoder_scale is not None:
        t["W_dec"] *= np.asarray(decoder_scale)[:, None]
    if architecture == "gated":
        t["b_gate"] = rng.normal(0, 0.2, d_sae)
        t["b_mag"] = rng.normal(0, 0.2, d_sae)
        t["r_mag"] = rng.uniform(-0.5, 0.5, d_sae)
    else:
        t["b_enc"] = rng.normal(0, 0.2, d_sae)
    if architecture in ("jumprelu", "jumprelu_transcoder", "jumprelu_skip_transcoder"):
        t["threshold"] = rng.uniform(0.5 * threshold, 1.5 * threshold, d_sae)
    if skip:
        t["W_skip"] = rng.normal(0, 0.3, (d_out, d_in))
    return t


def _topk(pre, k):
    """SAELens's TopK: torch.topk of pre along the last axis, ReLU of the values
    (ties go to the lower index, as torch's CPU topk returns them for distinct
    values; the tests use continuous random data)."""
    out = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=-1, kind="stable")[:, :k]
    rows = np.arange(pre.shape[0])[:, None]
    out[rows, idx] = np.maximum(pre[rows, idx], 0.0)
    return out


def forward(architecture, t, cfg, x, threshold=None):
    """SAELens's encode and forward of the family in float64: (f, out).
    architecture: the SAELens name, or "batchtopk"/"matryoshka_batchtopk" for a
    training checkpoint evaluated the way its inference save would be (JumpReLU
    with threshold = topk_threshold on the rescaled pre-activations)."""
    t = {name: np.asarray(v, dtype=np.float64) for name, v in t.items()}
    x = np.asarray(x, dtype=np.float64)
    transcoder = architecture.endswith("transcoder")
    apply_b_dec = cfg.get("apply_b_dec_to_input", True) and not transcoder
    sae_in = x - t["b_dec"] if apply_b_dec else x
    norms = np.linalg.norm(t["W_dec"], axis=1)
    rescale = cfg.get("rescale_acts_by_decoder_norm", False)
    if architecture == "gated":
        gate = sae_in @ t["W_enc"] + t["b_gate"] > 0
        mag = sae_in @ (t["W_enc"] * np.exp(t["r_mag"])) + t["b_mag"]
        f = gate * np.maximum(mag, 0.0)
    else:
        pre = sae_in @ t["W_enc"] + t["b_enc"]
        if architecture == "topk":
            if rescale:
                pre = pre * norms
            k = cfg.get("k") or cfg["activation_fn_kwargs"]["k"]
            f = _topk(pre, int(k))
        elif architecture in ("batchtopk", "matryoshka_batchtopk"):
            if rescale:
                pre = pre * norms
            thr = float(t["topk_threshold"]) if threshold is None else threshold
            f = np.maximum(pre, 0.0) * (pre > thr)
        elif architecture.startswith("jumprelu"):
            thr = t["threshold"] if "threshold" in t else np.exp(t["log_threshold"])
            f = np.maximum(pre, 0.0) * (pre > thr)
        else:
            f = np.maximum(pre, 0.0)
    acts = f / norms if rescale and architecture in ("topk", "batchtopk",
                                                      "matryoshka_batchtopk") else f
    out = acts @ t["W_dec"] + t["b_dec"]
    if "W_skip" in t:
        out = out + x @ t["W_skip"].T
    return f, out


def fold_norm_topk(t):
    """SAELens's _fold_norm_topk on a copy of the state dict."""
    t = {name: np.array(v, dtype=np.float64) for name, v in t.items()}
    n = np.maximum(np.linalg.norm(t["W_dec"], axis=1), 1e-8)
    t["b_enc"] = t["b_enc"] * n
    t["W_dec"] = t["W_dec"] / n[:, None]
    t["W_enc"] = t["W_enc"] * n[None, :]
    return t


def defaulting_is_native(cfg):
    """SAELens 6.x's handle_config_defaulting: is this configuration read
    natively (True) or converted from the pre-6.0 layout, which keeps only
    the LLM metadata keys (False)?"""
    version = cfg.get("sae_lens_version")
    if not version and "metadata" in cfg:
        version = cfg["metadata"].get("sae_lens_version")
    if not version:
        return False
    major = int(str(version).split(".")[0])
    return major >= 6
