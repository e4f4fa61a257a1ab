"""Records llama.cpp's logits at every position of a prompt, for the worker's tests.

    python bench/llama_cpp_logits.py MODEL.gguf PROMPT.txt OUT.logits

Tokenizes the prompt as llama.cpp does for a chat prompt (BOS added where the model
wants it, special tokens parsed), evaluates every token in one batch with
llama-cpp-python on the CPU, and writes (little-endian) `RBEELGT1`, the FNV-1a 64 of
MODEL.gguf's bytes (0 when over 64 MB), the token count and vocabulary size (u32 each), the tokens (u32),
then each position's logits (f32). worker/tests/integration/llama_cpp.rs reads it.
"""

import struct
import sys

import numpy as np
from llama_cpp import Llama


def fnv1a(path):
    """The file's FNV-1a 64, or 0 for a file over 64 MB (plain Python takes minutes on
    those; the tests check the hash only of the small files they write)."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size > 64 << 20:
        return 0
    value = 0xCBF29CE484222325
    for byte in data.tobytes():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: llama_cpp_logits.py MODEL.gguf PROMPT.txt OUT.logits")
    model, prompt_file, out = sys.argv[1:]
    prompt = open(prompt_file, encoding="utf-8").read()
    llm = Llama(model_path=model, logits_all=True, n_ctx=512, n_batch=512, n_threads=2,
                verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(tokens)
    vocab = llm.n_vocab()
    logits = np.asarray(llm.scores[: len(tokens)], dtype="<f4")
    assert logits.shape == (len(tokens), vocab), logits.shape
    with open(out, "wb") as f:
        f.write(b"RBEELGT1")
        f.write(struct.pack("<QII", fnv1a(model), len(tokens), vocab))
        f.write(np.asarray(tokens, dtype="<u4").tobytes())
        f.write(logits.tobytes())
    print(f"{out}: {len(tokens)} tokens, vocabulary {vocab}")


if __name__ == "__main__":
    main()
