"""Writes a ~1B-parameter llama GGUF with random weights, for benchmarks.

    python bench/make_llama_1b.py TOKENIZER.gguf OUT.gguf

The shape is a small modern llama (hidden 2048, 16 layers, 32 query heads and 8 KV
heads of 64, FFN 8192, embeddings tied to the output): 1.07B parameters, every matrix
Q8_0 and every norm F32, about 1.1 GB, so the weights do not fit in any CPU cache and
decode is bound by memory bandwidth as with a real model of that size. The tokenizer
(every tokenizer.* key, chat template included) and with it the vocabulary come from
TOKENIZER.gguf, so prompts tokenize as for that model. The text it generates is
nonsense; the timings are what matter.

Weights are normal(0, 0.02) from a fixed seed (the same file every time), small
enough that activations stay finite; norms are 1.
"""

import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

HIDDEN = 2048
LAYERS = 16
HEADS = 32
KV_HEADS = 8
HEAD_DIM = HIDDEN // HEADS
FFN = 8192
CONTEXT = 4096
ROPE_BASE = 500000.0
RMS_EPS = 1e-5
SEED = 20261205
SCALE = 0.02


def copy_tokenizer(reader, writer):
    vocab = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
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


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_llama_1b.py TOKENIZER.gguf OUT.gguf")
    source, out = sys.argv[1:]
    reader = GGUFReader(source)
    writer = GGUFWriter(out, arch="llama")
    writer.add_name("rbee bench llama 1B (random weights)")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_file_type(7)  # LLAMA_FTYPE_MOSTLY_Q8_0
    vocab = copy_tokenizer(reader, writer)
    writer.add_vocab_size(vocab)
    writer.add_quantization_version(2)

    rng = np.random.default_rng(SEED)
    q8 = GGMLQuantizationType.Q8_0
    ones = np.ones(HIDDEN, dtype=np.float32)
    writer.add_tensor("token_embd.weight", q8_0(rng, vocab, HIDDEN), raw_dtype=q8)
    for layer in range(LAYERS):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        writer.add_tensor(f"{blk}.attn_q.weight", q8_0(rng, HIDDEN, HIDDEN), raw_dtype=q8)
        writer.add_tensor(f"{blk}.attn_k.weight", q8_0(rng, KV_HEADS * HEAD_DIM, HIDDEN),
                          raw_dtype=q8)
        writer.add_tensor(f"{blk}.attn_v.weight", q8_0(rng, KV_HEADS * HEAD_DIM, HIDDEN),
                          raw_dtype=q8)
        writer.add_tensor(f"{blk}.attn_output.weight", q8_0(rng, HIDDEN, HIDDEN), raw_dtype=q8)
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones)
        writer.add_tensor(f"{blk}.ffn_gate.weight", q8_0(rng, FFN, HIDDEN), raw_dtype=q8)
        writer.add_tensor(f"{blk}.ffn_up.weight", q8_0(rng, FFN, HIDDEN), raw_dtype=q8)
        writer.add_tensor(f"{blk}.ffn_down.weight", q8_0(rng, HIDDEN, FFN), raw_dtype=q8)
    writer.add_tensor("output_norm.weight", ones)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
