"""Writes a GGUF model of one family with random weights, for benchmarks.

    python bench/make_random_model.py ARCH TOKENIZER.gguf OUT.gguf [--layers N] [--window N]

ARCH is `llama` (a ~1B-parameter small modern llama: hidden 2048, 16 layers, 32 query
heads and 8 KV heads of 64, FFN 8192; bench/make_llama_1b.py), `qwen2` (the shape of
Qwen2.5-0.5B: hidden 896, 24 layers, 14 query heads and
2 KV heads of 64, FFN 4864, projection biases) or `qwen3` (the shape of Qwen3-0.6B:
hidden 1024, 28 layers, 16 query heads and 8 KV heads of 128, FFN 3072, per-head
query/key norms), `gemma2` (the shape of Gemma 2 2B: hidden 2304, 26 layers, 8 query
heads and 4 KV heads of 256, FFN 9216, post norms, soft caps 50 and 30, every other
layer windowed over 4096 positions) or `gemma3` (the shape of Gemma 3 1B: hidden 1152,
26 layers, 4 query heads and 1 KV head of 256, FFN 6912, post norms, per-head query/key
norms, five layers in six windowed over 512 positions) or `phi3` (Phi-3-mini's width:
hidden 3072, 32 heads of 96, FFN 8192, fused QKV and gate/up projections; 8 of its 32
layers, 1.0B parameters with the embedding, and an output matrix of its own, which
llama.cpp's phi3 requires). `--layers N` keeps the first N
layers (a smaller model of the same width); `--window N` sets a Gemma's window (so that
a short prompt outgrows it). Every matrix is Q8_0, every norm and bias F32, the output tied to
the embedding (but phi3's). The tokenizer (every tokenizer.* key) and with it the vocabulary come
from TOKENIZER.gguf, so prompts tokenize as for that model; the text generated is
nonsense, the timings are what matter.

Weights are normal(0, 0.02) from a fixed seed (the same file every time); norms are 1.
"""

import argparse
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter

SHAPES = {
    "llama": dict(hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64, ffn=8192,
                  base=500_000.0, eps=1e-5, context=4096, seed=20261205,
                  name="rbee bench llama 1B (random weights)"),
    "qwen2": dict(hidden=896, layers=24, heads=14, kv_heads=2, head_dim=64, ffn=4864,
                  base=1_000_000.0, eps=1e-6, context=32768, seed=20261206,
                  name="rbee bench qwen2 (random weights)"),
    "qwen3": dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072,
                  base=1_000_000.0, eps=1e-6, context=40960, seed=20261206,
                  name="rbee bench qwen3 (random weights)"),
    "gemma2": dict(hidden=2304, layers=26, heads=8, kv_heads=4, head_dim=256, ffn=9216,
                   base=10_000.0, eps=1e-6, context=8192, seed=20261207, window=4096,
                   name="rbee bench gemma2 (random weights)"),
    "gemma3": dict(hidden=1152, layers=26, heads=4, kv_heads=1, head_dim=256, ffn=6912,
                   base=1_000_000.0, eps=1e-6, context=32768, seed=20261207, window=512,
                   name="rbee bench gemma3 (random weights)"),
    "phi3": dict(hidden=3072, layers=8, heads=32, kv_heads=32, head_dim=96, ffn=8192,
                 base=10_000.0, eps=1e-5, context=4096, seed=20261208,
                 # Not "phi3" in the name: llama.cpp then expects Phi-3's own
                 # SentencePiece tokens (`<s>`, `</s>`) in the borrowed vocabulary.
                 name="rbee bench phi (random weights)"),
}
SCALE = 0.02


def copy_tokenizer(reader, writer):
    vocab = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            value = field.contents()
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
            if key == "tokenizer.ggml.tokens":
                vocab = len(value)
        else:
            writer.add_key_value(key, field.contents(), vtype)
    if vocab is None:
        sys.exit("the tokenizer file has no tokenizer.ggml.tokens")
    return vocab


def q8_0(rng, rows, cols):
    """A rows x cols matrix (cols = input features) of random weights, as Q8_0 bytes."""
    weights = (rng.standard_normal((rows, cols), dtype=np.float32) * SCALE).astype(np.float32)
    return gguf.quants.quantize(weights, GGMLQuantizationType.Q8_0)


def write(arch, source, out, layers=None, window=None):
    s = dict(SHAPES[arch])
    if layers:
        s["layers"] = layers
    if window:
        s["window"] = window
    gemma = arch.startswith("gemma")
    hidden, heads, kv_heads, head_dim = s["hidden"], s["heads"], s["kv_heads"], s["head_dim"]
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    reader = GGUFReader(source)
    writer = GGUFWriter(out, arch=arch)
    writer.add_name(s["name"])
    writer.add_context_length(s["context"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(s["layers"])
    writer.add_feed_forward_length(s["ffn"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    if arch in ("llama", "phi3"):
        writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(s["base"])
    writer.add_layer_norm_rms_eps(s["eps"])
    if arch == "qwen3" or gemma:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if gemma:
        writer.add_sliding_window(s["window"])
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(50.0)
        writer.add_final_logit_softcapping(30.0)
    writer.add_file_type(7)  # LLAMA_FTYPE_MOSTLY_Q8_0
    vocab = copy_tokenizer(reader, writer)
    writer.add_vocab_size(vocab)
    writer.add_quantization_version(2)

    rng = np.random.default_rng(s["seed"])
    q8 = GGMLQuantizationType.Q8_0
    ones = np.ones(hidden, dtype=np.float32)
    writer.add_tensor("token_embd.weight", q8_0(rng, vocab, hidden), raw_dtype=q8)
    for layer in range(s["layers"]):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        if arch == "phi3":
            qkv = q8_0(rng, q_dim + 2 * kv_dim, hidden)
            writer.add_tensor(f"{blk}.attn_qkv.weight", qkv, raw_dtype=q8)
        else:
            writer.add_tensor(f"{blk}.attn_q.weight", q8_0(rng, q_dim, hidden), raw_dtype=q8)
            writer.add_tensor(f"{blk}.attn_k.weight", q8_0(rng, kv_dim, hidden), raw_dtype=q8)
            writer.add_tensor(f"{blk}.attn_v.weight", q8_0(rng, kv_dim, hidden), raw_dtype=q8)
        if arch == "qwen2":
            for name, width in (("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)):
                bias = (rng.standard_normal(width, dtype=np.float32) * SCALE).astype(np.float32)
                writer.add_tensor(f"{blk}.{name}.bias", bias)
        if arch in ("qwen3", "gemma3"):
            writer.add_tensor(f"{blk}.attn_q_norm.weight", np.ones(head_dim, dtype=np.float32))
            writer.add_tensor(f"{blk}.attn_k_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_output.weight", q8_0(rng, hidden, q_dim), raw_dtype=q8)
        if gemma:
            writer.add_tensor(f"{blk}.post_attention_norm.weight", ones)
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones)
        if arch == "phi3":
            gate_up = q8_0(rng, 2 * s["ffn"], hidden)
            writer.add_tensor(f"{blk}.ffn_up.weight", gate_up, raw_dtype=q8)
        else:
            writer.add_tensor(f"{blk}.ffn_gate.weight", q8_0(rng, s["ffn"], hidden), raw_dtype=q8)
            writer.add_tensor(f"{blk}.ffn_up.weight", q8_0(rng, s["ffn"], hidden), raw_dtype=q8)
        writer.add_tensor(f"{blk}.ffn_down.weight", q8_0(rng, hidden, s["ffn"]), raw_dtype=q8)
        if gemma:
            writer.add_tensor(f"{blk}.post_ffw_norm.weight", ones)
    writer.add_tensor("output_norm.weight", ones)
    if arch == "phi3":
        # llama.cpp's phi3 has no tied embedding: its output matrix is required.
        writer.add_tensor("output.weight", q8_0(rng, vocab, hidden), raw_dtype=q8)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    parser = argparse.ArgumentParser(description="a random-weight GGUF of a real model's shape")
    parser.add_argument("arch", choices=SHAPES)
    parser.add_argument("tokenizer", help="a GGUF file whose tokenizer.* keys are copied")
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, help="keep only the first N layers")
    parser.add_argument("--window", type=int, help="a Gemma's sliding window")
    args = parser.parse_args()
    write(args.arch, args.tokenizer, args.out, args.layers, args.window)


if __name__ == "__main__":
    main()
