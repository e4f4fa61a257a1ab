"""Records llama.cpp's token ids of a list of strings under each of several tokenizers,
for the worker's pre-tokenizer test (worker/tests/integration/llama_cpp.rs).

    python bench/llama_cpp_token_ids.py STRINGS.json OUT.json NAME=FILE.gguf...

Loads each file's vocabulary only (llama-cpp-python, `vocab_only`), tokenizes every
string as the worker's `encode` does (no BOS, special tokens parsed), and writes
`{NAME: {"fnv1a": the file's FNV-1a 64, "ids": [[id, ...] per string]}}`.
"""

import json
import sys

from llama_cpp import Llama

from llama_cpp_logits import fnv1a


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: llama_cpp_token_ids.py STRINGS.json OUT.json NAME=FILE.gguf...")
    strings_file, out, *files = sys.argv[1:]
    strings = json.load(open(strings_file, encoding="utf-8"))
    record = {}
    for pair in files:
        name, path = pair.split("=", 1)
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        ids = [llm.tokenize(s.encode(), add_bos=False, special=True) for s in strings]
        record[name] = {"fnv1a": fnv1a(path), "ids": ids}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"{out}: {len(strings)} strings under {len(record)} tokenizers")


if __name__ == "__main__":
    main()
