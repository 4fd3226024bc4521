"""Independent NumPy reference for cfsp-mpi (float64 throughout).

Owns: safetensors/config loading (F32/F16/BF16, sharded, block_configs, tied embeddings,
llama3 RoPE scaling), the HF-LLaMA forward pass, calibration offsets, calibration statistics
(coarse importance + per-channel sums), the CFSP fine scores, budget allocation, channel
selection, the wanda_sp / flap / mag_sp baselines, pruning and perplexity.

Every formula follows /work/shared/reference/cfsp-reference.md and docs/CONTRACTS.md.
Choices the reference doc leaves open are marked "CHOICE:" in comments.

Pure numpy + stdlib; it never imports anything from the C project.
"""

import json
import math
import os
import random
import struct

import numpy as np

# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2),
              "BF16": (np.dtype("<u2"), 2), "F64": (np.dtype("<f8"), 8)}


def bf16_bits_to_f32(u16):
    """bfloat16 bit patterns (uint16) -> float32, exactly (bf16 is the top half of an fp32)."""
    return (np.asarray(u16, dtype=np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (NaN not handled: not needed)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_round(x):
    """Round float values to the nearest bfloat16 and return them as float64."""
    return bf16_bits_to_f32(f32_to_bf16_bits(np.asarray(x, dtype=np.float32))).astype(np.float64)


def read_safetensors(path):
    """Read every tensor of one .safetensors file into float64 numpy arrays."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError("%s: unsupported dtype %s for %s" % (path, dt, name))
        npdt, size = _ST_DTYPES[dt]
        b0, b1 = info["data_offsets"]
        shape = tuple(info["shape"])
        n = int(np.prod(shape)) if shape else 1
        if b1 - b0 != n * size:
            raise ValueError("%s: %s has %d bytes, expected %d" % (path, name, b1 - b0, n * size))
        arr = np.frombuffer(raw, dtype=npdt, count=n, offset=base + b0)
        if dt == "BF16":
            arr = bf16_bits_to_f32(arr)
        out[name] = arr.astype(np.float64).reshape(shape)
    return out


def write_safetensors(path, tensors, dtype="F32"):
    """Write {name: array} as one safetensors file in dtype F32, F16 or BF16 (for tests)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if dtype == "F32":
            data = a.astype("<f4").tobytes()
        elif dtype == "F16":
            data = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            data = f32_to_bf16_bits(a.astype(np.float32)).astype("<u2").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_model_dir(out_dir, config, tensors, dtype="F32", shards=1):
    """Write an HF-layout model directory (config.json + one or several safetensors files)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = sorted(tensors)
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype)
        return
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, g in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        write_safetensors(os.path.join(out_dir, fname), {n: tensors[n] for n in g}, dtype)
        for n in g:
            weight_map[n] = fname
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def read_model_tensors(model_dir):
    """All tensors of a model directory (single file or sharded via the index json)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        tensors = {}
        for fname in sorted(set(wm.values())):
            part = read_safetensors(os.path.join(model_dir, fname))
            for n in part:
                if wm.get(n) == fname:
                    tensors[n] = part[n]
        missing = [n for n in wm if n not in tensors]
        if missing:
            raise ValueError("tensors listed in the index but absent: %s" % missing[:5])
        return tensors
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------

def llama3_inv_freq(inv_freq, rs):
    """transformers' _compute_llama3_parameters, vectorised (attention_factor is 1.0)."""
    factor = float(rs["factor"])
    low = float(rs["low_freq_factor"])
    high = float(rs["high_freq_factor"])
    old = float(rs["original_max_position_embeddings"])
    low_wl = old / low
    high_wl = old / high
    wavelen = 2.0 * math.pi / inv_freq
    out = np.where(wavelen > low_wl, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1.0 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, out)


def yarn_inv_freq(dim, base, rs, max_pos):
    """transformers' _compute_yarn_parameters: (inv_freq, attention_factor); the attention factor
    multiplies cos and sin."""
    factor = float(rs["factor"])
    orig = float(rs.get("original_max_position_embeddings") or max_pos)
    beta_fast, beta_slow = float(rs.get("beta_fast") or 32), float(rs.get("beta_slow") or 1)

    def get_mscale(s, m=1.0):
        return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
    ms, msa = rs.get("mscale"), rs.get("mscale_all_dim")
    att = rs.get("attention_factor") or (get_mscale(factor, ms) / get_mscale(factor, msa) if ms and msa else get_mscale(factor))

    def corr(r):
        return dim * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))
    low, high = corr(beta_fast), corr(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    pos = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    extra = 1 - ramp
    return (1 / (factor * pos)) * (1 - extra) + (1 / pos) * extra, float(att)


class Model:
    """Plain container: config values + float64 weights (layers: list of dicts)."""

    def __init__(self):
        self.cfg = {}
        self.layers = []
        self.rope_mscale = 1.0      # yarn's attention factor (on cos and sin)

    def copy(self):
        m = Model()
        m.__dict__.update(self.__dict__)
        m.layers = [dict(l) for l in self.layers]
        return m


def bc_ffn_size(ffn, hidden):
    """a block_configs[i].ffn's size: intermediate_size, else Nemotron-NAS's rule from ffn_mult
    (int(2 * ffn_mult * hidden / 3) rounded up to a multiple of 256; ffn_mult to 6 decimals)."""
    if "intermediate_size" in ffn or "ffn_mult" not in ffn:
        return int(ffn["intermediate_size"])
    n = int(2 * round(ffn["ffn_mult"], 6) * hidden / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def model_from_tensors(cfg, t):
    """Build a Model from a config dict and {HF name: float64 array}."""
    m = Model()
    m.cfg = cfg
    m.D = int(cfg["hidden_size"])
    m.L = int(cfg["num_hidden_layers"])
    m.H = int(cfg["num_attention_heads"])
    m.KV = int(cfg.get("num_key_value_heads") or m.H)
    hd = cfg.get("head_dim")
    m.hd = int(hd) if hd else m.D // m.H
    m.V = int(cfg["vocab_size"])
    m.eps = float(cfg.get("rms_norm_eps", 1e-6))
    m.theta = float(cfg.get("rope_theta", 10000.0))
    if m.H % m.KV:
        raise ValueError("heads %d not a multiple of kv heads %d" % (m.H, m.KV))
    inv = m.theta ** (-(np.arange(0, m.hd, 2, dtype=np.float64) / m.hd))
    rs = cfg.get("rope_scaling")
    if rs:
        rtype = rs.get("rope_type", rs.get("type"))
        if rtype == "llama3":
            inv = llama3_inv_freq(inv, rs)
        elif rtype == "yarn":
            inv, m.rope_mscale = yarn_inv_freq(m.hd, m.theta, rs, int(cfg.get("max_position_embeddings", 2048)))
        elif rtype not in (None, "default"):
            raise ValueError("unsupported rope_scaling %r" % rtype)
    m.inv_freq = inv
    m.embed = t["model.embed_tokens.weight"]
    m.norm = t["model.norm.weight"]
    # lm_head = embed_tokens when lm_head.weight is absent. CHOICE: a stored lm_head.weight is used
    # as stored even with tie_word_embeddings true (the shared tinystories656K stores both, equal).
    m.tied = "lm_head.weight" not in t
    m.lm_head = m.embed if m.tied else t["lm_head.weight"]
    bc = cfg.get("block_configs")
    for l in range(m.L):
        p = "model.layers.%d." % l
        ly = {
            "in_norm": t[p + "input_layernorm.weight"],
            "post_norm": t[p + "post_attention_layernorm.weight"],
            "q": t[p + "self_attn.q_proj.weight"], "k": t[p + "self_attn.k_proj.weight"],
            "v": t[p + "self_attn.v_proj.weight"], "o": t[p + "self_attn.o_proj.weight"],
            "gate": t[p + "mlp.gate_proj.weight"], "up": t[p + "mlp.up_proj.weight"],
            "down": t[p + "mlp.down_proj.weight"],
            "down_bias": t.get(p + "mlp.down_proj.bias"),
        }
        for nm in ("q", "k", "v", "o"):
            ly[nm + "_bias"] = t.get(p + "self_attn.%s_proj.bias" % nm)
        # Qwen3: RMSNorm over head_dim of every q and k head, before RoPE (transformers Qwen3Attention)
        ly["q_norm"] = t.get(p + "self_attn.q_norm.weight")
        ly["k_norm"] = t.get(p + "self_attn.k_norm.weight")
        mt = cfg.get("model_type", "llama")
        if mt == "qwen2" and any(ly[nm + "_bias"] is None for nm in ("q", "k", "v")):
            raise ValueError("layer %d: a qwen2 block without q/k/v biases" % l)
        if mt == "qwen3" and (ly["q_norm"] is None or ly["k_norm"] is None):
            raise ValueError("layer %d: a qwen3 block without q_norm/k_norm" % l)
        mff = ly["gate"].shape[0]
        want = (bc_ffn_size(bc[l]["ffn"], m.D) if bc else int(cfg["intermediate_size"]))
        if mff != want or ly["up"].shape != (mff, m.D) or ly["down"].shape != (m.D, mff):
            raise ValueError("layer %d: FFN shapes %s/%s/%s do not match size %d" % (
                l, ly["gate"].shape, ly["up"].shape, ly["down"].shape, want))
        if ly["q"].shape != (m.H * m.hd, m.D) or ly["k"].shape != (m.KV * m.hd, m.D):
            raise ValueError("layer %d: attention shapes do not match the config" % l)
        m.layers.append(ly)
    return m


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    return model_from_tensors(cfg, read_model_tensors(model_dir))


def ffn_sizes(model):
    return [ly["gate"].shape[0] for ly in model.layers]


# ----------------------------------------------------------------------------------------------
# forward (vectorised over tokens)
# ----------------------------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_tables(inv_freq, T):
    freqs = np.outer(np.arange(T, dtype=np.float64), inv_freq)     # [T, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                    # [T, hd]
    return np.cos(emb), np.sin(emb)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


# The arithmetic of the matrix products of the forward pass: "fp32" (exact float64 products, the
# parity reference of cfsp-mpi's fp32 mode) or "bf16" (cfsp-mpi --compute bf16: both operands of
# every product rounded to bfloat16, round to nearest even, from their float32 values; the product
# itself exact). Everything that is not a matrix product stays float64 in both.
# "bf16_proj" (cfsp-mpi recover --compute bf16): the products of the frozen projections q, k, v, o,
# gate, up, down rounded so; attention and lm_head exact.
PRODUCTS = "fp32"


def set_products(mode):
    global PRODUCTS
    assert mode in ("fp32", "bf16", "bf16_proj"), mode
    PRODUCTS = mode


def mm(a, b):
    """a @ b with the operands as cfsp-mpi's matmul backend sees them (see PRODUCTS)."""
    if PRODUCTS == "bf16":
        return bf16_round(a) @ bf16_round(b)
    return a @ b


def mmw(a, b):
    """a projection's product (x W^T) as cfsp-mpi's matmul backend sees it (see PRODUCTS)."""
    if PRODUCTS in ("bf16", "bf16_proj"):
        return bf16_round(a) @ bf16_round(b)
    return a @ b


def _linear(x, w, b=None):
    y = mmw(x, w.T)
    return y if b is None else y + b


def attention(model, ly, x, cos, sin):
    T = x.shape[0]
    H, KV, hd = model.H, model.KV, model.hd
    q = _linear(x, ly["q"], ly["q_bias"]).reshape(T, H, hd).transpose(1, 0, 2)
    k = _linear(x, ly["k"], ly["k_bias"]).reshape(T, KV, hd).transpose(1, 0, 2)
    v = _linear(x, ly["v"], ly["v_bias"]).reshape(T, KV, hd).transpose(1, 0, 2)
    if ly.get("q_norm") is not None:
        q = rmsnorm(q, ly["q_norm"], model.eps)
        k = rmsnorm(k, ly["k_norm"], model.eps)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = H // KV                      # HF repeat_kv: query head h uses kv head h // rep
    k = np.repeat(k, rep, axis=0)
    v = np.repeat(v, rep, axis=0)
    s = mm(q, k.transpose(0, 2, 1)) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    o = mm(p, v).transpose(1, 0, 2).reshape(T, H * hd)
    return _linear(o, ly["o"], ly["o_bias"])


def mlp(model, ly, x):
    """Returns (ffn output, down_proj input)."""
    a = silu(mmw(x, ly["gate"].T)) * mmw(x, ly["up"].T)
    return _linear(a, ly["down"], ly["down_bias"]), a


def forward(model, tokens, hook=None, logits=True):
    """Logits [T, V] (float64) of one sequence, positions 0..T-1.

    hook(l, h_in, h_out, x_down) is called per block with the residual stream entering and
    leaving block l and the down_proj input, all [T, *] float64.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    cos, sin = rope_tables(model.inv_freq, T)
    cos, sin = cos * model.rope_mscale, sin * model.rope_mscale
    h = model.embed[tokens]
    for l, ly in enumerate(model.layers):
        h_in = h
        h = h + attention(model, ly, rmsnorm(h, ly["in_norm"], model.eps), cos, sin)
        f, a = mlp(model, ly, rmsnorm(h, ly["post_norm"], model.eps))
        h = h + f
        if hook is not None:
            hook(l, h_in, h, a)
    if not logits:
        return None
    return mm(rmsnorm(h, model.norm, model.eps), model.lm_head.T)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def perplexity(model, tokens, seqlen, windows=0, return_logits=False):
    """Non-overlapping windows of seqlen from the start (tail dropped), first `windows` only
    when windows > 0; loss over the predictions of tokens 1..T-1 of each window.
    Returns (ppl, nll_sum, ntokens) [+ logits [W, T, V] float64]."""
    tokens = np.asarray(tokens, dtype=np.int64)
    nw = len(tokens) // seqlen
    if windows > 0:
        nw = min(nw, windows)
    if nw <= 0:
        raise ValueError("not a single window of %d tokens" % seqlen)
    nll = 0.0
    all_logits = []
    for w in range(nw):
        seq = tokens[w * seqlen:(w + 1) * seqlen]
        lg = forward(model, seq)
        lp = log_softmax(lg[:-1])
        nll -= float(lp[np.arange(seqlen - 1), seq[1:]].sum())
        if return_logits:
            all_logits.append(lg)
    ntok = nw * (seqlen - 1)
    ppl = math.exp(nll / ntok)
    if return_logits:
        return ppl, nll, ntok, np.stack(all_logits)
    return ppl, nll, ntok


def read_tokens(path):
    return np.fromfile(path, dtype="<u4").astype(np.int64)


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------

def calib_offsets(ntokens, nsamples, seqlen, seed=0, sampling="random"):
    """Start offsets of the calibration sequences.
    random: Python's random.seed(seed); randint(0, n - seqlen - 1) per sample (Wanda/CFSP loader).
    consecutive: k * seqlen for k = 0..nsamples-1."""
    if sampling == "random":
        if ntokens - seqlen - 1 < 0:
            raise ValueError("token file too short for seqlen %d" % seqlen)
        random.seed(seed)
        return [random.randint(0, ntokens - seqlen - 1) for _ in range(nsamples)]
    if sampling == "consecutive":
        if nsamples * seqlen > ntokens:
            raise ValueError("token file too short for %d consecutive windows" % nsamples)
        return [k * seqlen for k in range(nsamples)]
    raise ValueError(sampling)


GLOBAL_METRICS = ("angular", "cosine", "mse", "mae")


def token_distances(h_in, h_out):
    """Per-token distances [T] for every coarse metric. cos: NaN (zero norm) -> 0.5, then
    clamped to [-1, 1] so that arccos never yields NaN."""
    dot = np.sum(h_in * h_out, axis=-1)
    n1 = np.sqrt(np.sum(h_in * h_in, axis=-1))
    n2 = np.sqrt(np.sum(h_out * h_out, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (n1 * n2)
    cos = np.where(np.isfinite(cos), cos, 0.5)
    cos = np.clip(cos, -1.0, 1.0)
    diff = h_in - h_out
    return {"angular": np.arccos(cos) / math.pi, "cosine": 1.0 - cos,
            "mse": np.mean(diff * diff, axis=-1), "mae": np.mean(np.abs(diff), axis=-1)}


class Stats:
    """Calibration statistics, the same quantities as the C program's stats.h5."""

    def __init__(self, L, sizes):
        self.importance = {k: np.zeros(L) for k in GLOBAL_METRICS}
        self.sum_sq = [np.zeros(m) for m in sizes]
        self.sum = [np.zeros(m) for m in sizes]
        self.nsamples = 0
        self.ntokens = 0
        self.seqlen = 0

    def A(self, l):
        """A_j = sqrt(sum_sq_j / nsamples) (the reference's running mean over samples)."""
        return np.sqrt(self.sum_sq[l] / self.nsamples)

    def mean_x(self, l):
        return self.sum[l] / self.ntokens

    def fluctuation(self, l):
        """Population variance of x_j over all calibration tokens."""
        mu = self.sum[l] / self.ntokens
        return self.sum_sq[l] / self.ntokens - mu * mu


def collect_stats(model, tokens, offsets, seqlen):
    """One dense forward pass per calibration sequence; every statistic of block l is measured
    on the output of the unpruned blocks before it."""
    st = Stats(model.L, ffn_sizes(model))

    def hook(l, h_in, h_out, a):
        d = token_distances(h_in, h_out)
        for k in GLOBAL_METRICS:
            st.importance[k][l] += float(d[k].sum())
        st.sum_sq[l] += np.sum(a * a, axis=0)
        st.sum[l] += np.sum(a, axis=0)

    tokens = np.asarray(tokens, dtype=np.int64)
    for off in offsets:
        forward(model, tokens[off:off + seqlen], hook=hook, logits=False)
    st.nsamples = len(offsets)
    st.seqlen = seqlen
    st.ntokens = len(offsets) * seqlen
    return st


def _attr_int(v):
    return int(np.asarray(v).reshape(-1)[0])


def stats_from_h5(path):
    """Read a C program stats.h5 into a Stats object (needs h5py)."""
    import h5py
    with h5py.File(path, "r") as f:
        L = _attr_int(f.attrs["num_layers"])
        sizes = [f["channels/%d/sum_sq" % l].shape[0] for l in range(L)]
        st = Stats(L, sizes)
        for k in GLOBAL_METRICS:
            st.importance[k] = np.asarray(f["importance/" + k], dtype=np.float64)
        for l in range(L):
            st.sum_sq[l] = np.asarray(f["channels/%d/sum_sq" % l], dtype=np.float64)
            st.sum[l] = np.asarray(f["channels/%d/sum" % l], dtype=np.float64)
        st.nsamples = _attr_int(f.attrs["nsamples"])
        st.seqlen = _attr_int(f.attrs["seqlen"])
        st.ntokens = _attr_int(f.attrs["ntokens"])
    return st


# ----------------------------------------------------------------------------------------------
# fine (intra-block) scores
# ----------------------------------------------------------------------------------------------

LOCAL_METRICS = ("three_w_one_wa", "three_w_one_a", "one_wa", "one_a", "wanda_base", "mag_base",
                 "three_w_one_wa_rownorm")


def _colnorm(X):
    """X / (sum over the D rows of each column). CHOICE: 0/0 (an all-zero column, e.g. a dead
    channel with A_j = 0 in U = |W| * A^b) is taken as 0 instead of propagating NaN."""
    s = X.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = X / s
    return np.where(np.isfinite(r), r, 0.0)


def _rownorm(X):
    """X / (sum over the m channels of each row): the documented row-normalised extension."""
    s = X.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = X / s
    return np.where(np.isfinite(r), r, 0.0)


def fine_scores(metric, down, up, gate, A, b=1.0, c=1.0):
    """score_j = mean over the D rows of M[:, j] (mag_base: L2 norm of column j of down_proj).
    down [D, m]; up, gate [m, D] (HF layout); A [m]."""
    W = np.abs(down)
    Wu = np.abs(up).T
    Wg = np.abs(gate).T
    A = np.asarray(A, dtype=np.float64)[None, :]
    if metric == "mag_base":
        return np.sqrt(np.sum(down * down, axis=0))
    if metric == "wanda_base":
        M = W * A
    elif metric == "one_a":
        M = _colnorm(W) * A ** 0.5        # the doc's fixed exponent 0.5 (not c)
    elif metric == "one_wa":
        M = _colnorm(W * A ** b) * A ** c
    elif metric == "three_w_one_a":
        M = (_colnorm(W) + _colnorm(Wu) + _colnorm(Wg)) * A ** c
    elif metric == "three_w_one_wa":
        M = (_colnorm(W * A ** b) + _colnorm(Wu) + _colnorm(Wg)) * A ** c
    elif metric == "three_w_one_wa_rownorm":
        M = (_rownorm(W * A ** b) + _rownorm(Wu) + _rownorm(Wg)) * A ** c
    else:
        raise ValueError("unknown local metric %r" % metric)
    return M.mean(axis=0)


# ----------------------------------------------------------------------------------------------
# allocation and selection
# ----------------------------------------------------------------------------------------------

def allocate(importance, p, mode="default", a=1.0, ntokens=None):
    """keep_l (fraction of channels block l keeps) from the coarse importance I_l.
    Returns (keep [L], squeezed flag)."""
    I = np.asarray(importance, dtype=np.float64)
    if p <= 0.0:
        # CHOICE: p = 0 makes the squeeze formula 0/0 when all s_l are equal; keep everything.
        return np.ones(len(I)), False
    mid = I.mean()
    x = (I - mid) / 1e4
    if mode == "default":
        x = x * 131072.0 / float(ntokens)
    elif mode != "reference":
        raise ValueError(mode)
    s = 1.0 / (1.0 + np.exp(-a * x))
    avg = s.mean()
    mx = s.max()
    squeezed = False
    if mx / avg * (1.0 - p) >= 1.0:
        k = avg * (1.0 / (1.0 - p) - 1.0) / (mx - avg) / 1.05
        s = avg + (s - avg) * k
        avg = s.mean()
        squeezed = True
    return s / avg * (1.0 - p), squeezed


def topk_desc(score, k):
    """Indices (ascending) of the k highest scores; ties broken by lower channel index."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    return np.sort(order[:k])


def keep_count_default(m, r, align=0):
    """default mode: round(m*r) half-up, or round(m*r/A)*A; clamped to [1, m] / [A, m]."""
    if align and align > 0:
        k = int(math.floor(m * r / align + 0.5)) * align
        return max(align, min(k, m)) if align <= m else m
    return max(1, min(int(math.floor(m * r + 0.5)), m))


def threshold_index_reference(m, r, align=0):
    """reference mode: index into the descending sort; -1 keeps everything.
    default: floor(m*r); cuda_friendly generalised to align A: floor((m*r + A/2)/A)*A - 1.
    CHOICE: an index >= m (possible when m is not a multiple of A) is clamped to m-1, which keeps
    everything, like -1 (the reference would raise an IndexError there)."""
    if align and align > 0:
        idx = int(math.floor((m * r + align / 2.0) / align)) * align - 1
    else:
        idx = int(math.floor(m * r))
    return min(idx, m - 1)


def select_reference(score, r, align=0):
    """Kept channel indices (ascending) under the reference's threshold rule (ties all stay)."""
    score = np.asarray(score, dtype=np.float64)
    m = len(score)
    idx = threshold_index_reference(m, r, align)
    if idx < 0:
        return np.arange(m)
    thr = np.sort(score)[::-1][idx]
    return np.nonzero(score >= thr)[0]


def select_default(score, r, align=0):
    return topk_desc(score, keep_count_default(len(score), r, align))


def cfsp_prune(model, st, p, global_metric="angular", local_metric="three_w_one_wa",
               mode="default", align=0, a=1.0, b=1.0, c=1.0):
    """Full CFSP selection. Returns dict with keep_fraction, squeezed, scores, kept (per layer)."""
    keep, squeezed = allocate(st.importance[global_metric], p, mode, a, st.ntokens)
    kept, scores = [], []
    for l, ly in enumerate(model.layers):
        sc = fine_scores(local_metric, ly["down"], ly["up"], ly["gate"], st.A(l), b, c)
        scores.append(sc)
        if mode == "reference":
            kept.append(select_reference(sc, keep[l], align))
        else:
            kept.append(select_default(sc, keep[l], align))
    return {"keep_fraction": keep, "squeezed": squeezed, "scores": scores, "kept": kept}


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------

def standardize(x):
    """(x - mean) / std with the population std (ddof=0).  With equal FFN sizes in every layer
    ddof=0 and ddof=1 (torch.std's default, used by FLAP) give the same global ranking, since the
    ratio of the two is the same constant in every layer."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / x.std()


def global_keep(std_scores, p):
    """One global threshold across layers: remove the n_remove = floor(p*total + 0.5) lowest
    standardised scores of all layers together.
    CHOICE: count rounded half-up; ties broken in favour of the lower (layer, channel) position,
    i.e. a stable descending sort of the concatenation; a layer that would lose every channel
    keeps its best one (cfsp-mpi's documented rule: a block with no FFN channel is not written)."""
    allv = np.concatenate(std_scores)
    total = len(allv)
    n_keep = total - int(math.floor(p * total + 0.5))
    order = np.argsort(-allv, kind="stable")[:n_keep]
    keep_mask = np.zeros(total, dtype=bool)
    keep_mask[order] = True
    kept, o = [], 0
    for s in std_scores:
        k = np.nonzero(keep_mask[o:o + len(s)])[0]
        if len(k) == 0:
            k = np.array([int(np.argsort(-s, kind="stable")[0])])
        kept.append(k)
        o += len(s)
    return kept


def wanda_sp_scores(model, st):
    return [np.mean(np.abs(ly["down"]), axis=0) * st.A(l) for l, ly in enumerate(model.layers)]


def flap_scores(model, st):
    return [st.fluctuation(l) * np.sum(ly["down"] ** 2, axis=0) for l, ly in enumerate(model.layers)]


def mag_sp_scores(model):
    return [np.sqrt(np.sum(ly["down"] ** 2, axis=0)) for ly in model.layers]


def flap_bias(model, st, kept):
    """Bias compensation: W[:, removed] @ mean_x[removed] per layer (mean over calibration tokens)."""
    out = []
    for l, ly in enumerate(model.layers):
        m = ly["down"].shape[1]
        removed = np.setdiff1d(np.arange(m), kept[l])
        out.append(ly["down"][:, removed] @ st.mean_x(l)[removed])
    return out


def baseline_prune(model, st, method, p, align=0):
    """Kept channels (and flap biases) of a baseline. Returns dict kept, bias (None or list), scores."""
    if method == "wanda_sp":
        raw = wanda_sp_scores(model, st)
        kept = global_keep([standardize(s) for s in raw], p)
        return {"kept": kept, "bias": None, "scores": raw}
    if method == "flap":
        raw = flap_scores(model, st)
        kept = global_keep([standardize(s) for s in raw], p)
        return {"kept": kept, "bias": flap_bias(model, st, kept), "scores": raw}
    if method == "mag_sp":
        # CHOICE: uniform per layer, k = round(m*(1-p)) half-up with the default-mode rounding
        # (and alignment when given); top-k with ties to the lower index.
        raw = mag_sp_scores(model)
        kept = [topk_desc(s, keep_count_default(len(s), 1.0 - p, align)) for s in raw]
        return {"kept": kept, "bias": None, "scores": raw}
    raise ValueError(method)


# ----------------------------------------------------------------------------------------------
# pruning
# ----------------------------------------------------------------------------------------------

def prune_model(model, kept, biases=None):
    """Slice gate/up rows and down_proj columns to the kept channels; optional down_proj bias."""
    pm = model.copy()
    for l, ly in enumerate(pm.layers):
        k = np.asarray(kept[l], dtype=np.int64)
        ly["gate"] = ly["gate"][k]
        ly["up"] = ly["up"][k]
        ly["down"] = ly["down"][:, k]
        if biases is not None and biases[l] is not None:
            base = ly["down_bias"] if ly["down_bias"] is not None else 0.0
            ly["down_bias"] = base + np.asarray(biases[l], dtype=np.float64)
    return pm


def read_pruned_h5(path, L):
    """kept_channels, optional down_proj bias and the FFN weights of a pruned C output file."""
    import h5py
    out = {"kept": [], "bias": [], "gate": [], "up": [], "down": []}
    with h5py.File(path, "r") as f:
        for l in range(L):
            g = f["model/layers/%d/mlp" % l]
            out["kept"].append(np.asarray(g["kept_channels"], dtype=np.int64))
            out["bias"].append(np.asarray(g["down_proj/bias"], dtype=np.float64)
                               if "bias" in g["down_proj"] else None)
            for nm in ("gate", "up", "down"):
                out[nm].append(np.asarray(g["%s_proj/weight" % nm], dtype=np.float64))
    return out
