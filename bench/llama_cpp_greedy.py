"""Records llama.cpp's greedy continuations of a few prompts on a real GGUF, for the
worker's test of real weights (worker/tests/integration/real.rs).

    python bench/llama_cpp_greedy.py MODEL.gguf OUT.json [STEPS]

Each prompt is tokenized as llama.cpp does (BOS where the model wants it, special
tokens parsed), evaluated with llama-cpp-python on the CPU, then continued greedily
one token at a time for STEPS tokens (default 32) or until an end-of-generation token.
Each step keeps its token and the margin between its best and second-best logits, so
that a test can tell a wrong token from a near tie. OUT.json holds the file's name,
size and SHA-256, llama.cpp's build, and one record per prompt.
"""

import hashlib
import json
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "1, 2, 3, 4, 5,",
    "La tour Eiffel se trouve à",
    "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n"
    "<start_of_turn>model\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: llama_cpp_greedy.py MODEL.gguf OUT.json [STEPS]")
    model, out = sys.argv[1:3]
    steps = int(sys.argv[3]) if len(sys.argv) == 4 else 32
    llm = Llama(model_path=model, logits_all=True, n_ctx=256, n_batch=256, n_threads=2,
                verbose=False)
    records = []
    for prompt in PROMPTS:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        ids, margins = [], []
        for _ in range(steps):
            logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            best, second = np.argsort(logits)[-1], np.argsort(logits)[-2]
            token = int(best)
            ids.append(token)
            margins.append(round(float(logits[best] - logits[second]), 4))
            if llama_cpp.llama_token_is_eog(llm._model.vocab, token):
                break
            llm.eval([token])
        text = llm.detokenize(ids).decode("utf-8", errors="replace")
        records.append({"prompt": prompt, "prompt_ids": tokens, "ids": ids,
                        "margins": margins, "text": text})
        print(f"{prompt!r} -> {text!r}")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"file": os.path.basename(model), "bytes": os.path.getsize(model),
                   "sha256": sha256(model),
                   "llama_cpp": llama_cpp.__version__,
                   "system": llama_cpp.llama_print_system_info().decode().strip(),
                   "prompts": records}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
