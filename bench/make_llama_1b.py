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

from make_random_model import write

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: make_llama_1b.py TOKENIZER.gguf OUT.gguf")
    write("llama", *sys.argv[1:])
