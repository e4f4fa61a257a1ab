"""Computes a Gemma GGUF's logits without rounding, to tell how far from the model each
engine is (the worker's and llama.cpp's both round activations to 8 bits).

    python bench/gemma_reference.py MODEL.gguf RECORD OUT [--float32]

RECORD is llama.cpp's record of the model on a prompt (bench/llama_cpp_logits.py); its
tokens are run through llama.cpp's graph for gemma, gemma2 and gemma3 (src/models/
gemma*.cpp: the embedding times sqrt(embedding), norms before and, for gemma2/3, after
attention and the feed-forward network, gemma3's per-head query/key norms, NEOX
rotation with gemma3's windowed layers at base 10000 unscaled, the query scale by
depth, soft caps, GELU, the output tied to the embedding) on the dequantised weights in
float64 (float32 with --float32, for large files). It prints how far llama.cpp's logits
are from these and writes them as a record with hash 0, which the worker's ignored test
compares with the engine:

    RBEE_LLAMA_CPP_CHECK=MODEL.gguf:OUT cargo test -p llm-worker-rbee --test integration \
        llama_cpp::a_named_file_gives_llama_cpps_logits -- --ignored --nocapture
"""

import argparse
import struct

import numpy as np

import gguf
from gguf import GGUFReader


def read_record(path):
    data = open(path, "rb").read()
    _, count, vocab = struct.unpack("<QII", data[8:24])
    tokens = np.frombuffer(data[24:24 + 4 * count], dtype="<u4")
    logits = np.frombuffer(data[24 + 4 * count:], dtype="<f4").reshape(count, vocab)
    return tokens, logits


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("record")
    parser.add_argument("out")
    parser.add_argument("--float32", action="store_true")
    args = parser.parse_args()
    dtype = np.float32 if args.float32 else np.float64

    reader = GGUFReader(args.model)

    def field(name, default=None):
        f = reader.fields.get(name)
        return default if f is None else f.contents()

    arch = field("general.architecture")
    if arch not in ("gemma", "gemma2", "gemma3"):
        raise SystemExit(f"{args.model} holds {arch}, not a Gemma")
    weights = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(dtype)
               for t in reader.tensors}

    def key(name, default=None):
        return field(f"{arch}.{name}", default)

    dim, layers = key("embedding_length"), key("block_count")
    heads, kv_heads = key("attention.head_count"), key("attention.head_count_kv")
    hd = key("attention.key_length", dim // heads)
    eps = key("attention.layer_norm_rms_epsilon")
    base = key("rope.freq_base", 10000.0)
    factor = key("rope.scaling.factor", 0.0)
    scale = 1.0 / factor if factor else 1.0
    window = key("attention.sliding_window")
    if arch == "gemma2":
        window = window or 4096
        period, attention_cap = 2, key("attn_logit_softcapping", 50.0)
        output_cap = key("final_logit_softcapping", 30.0)
    elif arch == "gemma3":
        period, attention_cap = 6, None
        output_cap = key("final_logit_softcapping")
    else:
        period, attention_cap, output_cap, window = None, None, None, None
    windowed = [bool(window) and l % period < period - 1 for l in range(layers)]
    large = (arch == "gemma2" and layers == 46) or (arch == "gemma3" and layers == 62)
    query_scale = 1.0 / np.sqrt(dim // heads if large else hd)

    def rotation(layer):
        if not windowed[layer]:
            return base, scale
        if arch == "gemma3":
            return key("rope.freq_base_swa", 10000.0), 1.0
        return key("rope.freq_base_swa", base), scale

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x, positions, rope_base, rope_scale):
        half = hd // 2
        freq = 1.0 / rope_base ** (2 * np.arange(half) / hd)
        angle = (positions[:, None] * rope_scale) * freq[None, :]
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], -1)

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(0.7978845608028654 * x * (1 + 0.044715 * x * x)))

    tokens, llama_cpp = read_record(args.record)
    count, vocab = llama_cpp.shape
    embedding = weights["token_embd.weight"].reshape(vocab, dim)
    x = embedding[tokens] * np.sqrt(np.float32(dim))
    positions = np.arange(count)
    for layer in range(layers):
        def w(part):
            return weights[f"blk.{layer}.{part}.weight"]

        h = rms(x, w("attn_norm"))
        q = (h @ w("attn_q").reshape(heads * hd, dim).T).reshape(count, heads, hd)
        k = (h @ w("attn_k").reshape(kv_heads * hd, dim).T).reshape(count, kv_heads, hd)
        v = (h @ w("attn_v").reshape(kv_heads * hd, dim).T).reshape(count, kv_heads, hd)
        if arch == "gemma3":
            q, k = rms(q, w("attn_q_norm")), rms(k, w("attn_k_norm"))
        q, k = rope(q, positions, *rotation(layer)), rope(k, positions, *rotation(layer))
        out = np.zeros((count, heads, hd), dtype=dtype)
        masked = positions[None, :] > positions[:, None]
        if windowed[layer]:
            masked |= positions[:, None] - positions[None, :] >= window
        for head in range(heads):
            group = head // (heads // kv_heads)
            scores = (q[:, head] * query_scale) @ k[:, group].T
            if attention_cap:
                scores = attention_cap * np.tanh(scores / attention_cap)
            scores = np.where(masked, -np.inf, scores)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            out[:, head] = (scores / scores.sum(-1, keepdims=True)) @ v[:, group]
        attended = out.reshape(count, heads * hd) @ w("attn_output").reshape(dim, -1).T
        if arch != "gemma":
            attended = rms(attended, w("post_attention_norm"))
        x = x + attended
        h = rms(x, w("ffn_norm"))
        ffn = gelu(h @ w("ffn_gate").reshape(-1, dim).T) * (h @ w("ffn_up").reshape(-1, dim).T)
        ffn = ffn @ w("ffn_down").reshape(dim, -1).T
        if arch != "gemma":
            ffn = rms(ffn, w("post_ffw_norm"))
        x = x + ffn
    logits = rms(x, weights["output_norm.weight"]) @ embedding.T
    if output_cap:
        logits = output_cap * np.tanh(logits / output_cap)

    spread = logits.max(-1) - logits.min(-1)
    worst = (np.abs(llama_cpp - logits).max(-1) / spread).max()
    same = (llama_cpp.argmax(-1) == logits.argmax(-1)).sum()
    print(f"{arch}: llama.cpp's logits differ by at most {worst:.5f} of the spread; "
          f"the same argmax at {same} of {count} positions")
    with open(args.out, "wb") as f:
        f.write(b"RBEELGT1")
        f.write(struct.pack("<QII", 0, count, vocab))
        f.write(tokens.astype("<u4").tobytes())
        f.write(logits.astype("<f4").tobytes())


if __name__ == "__main__":
    main()
