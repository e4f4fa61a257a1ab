#!/usr/bin/env python3
"""The peer side of scripts/gpu-check.sh: Hugging Face transformers on the same GGUF.

    python3 scripts/gpu-transformers.py MODEL.gguf [DEVICE]     # DEVICE: cuda:0 (default) or cpu

Loads the GGUF through transformers (which dequantises it; needs the `gguf` package),
asks the same capital-of-France question as the worker check, then measures prompt
and decode tokens/s on the same long prompt the worker check uses, greedy, 128 new
tokens, median of 3 runs after a warm-up, in float32 and in bfloat16. Prints one
line per figure and a JSON line starting with `transformers-json:` for the record.
"""

import json
import os
import statistics
import sys
import time

# The same prompt as the worker's side of the check (scripts/gpu-check.sh).
LONG = ("The history of the printing press begins in the fifteenth century, when Johannes "
        "Gutenberg combined movable metal type, oil-based inks and a wooden press. Explain, "
        "step by step, how this invention changed science, religion and politics")
NEW_TOKENS = 128


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    path = os.path.abspath(sys.argv[1])
    device = sys.argv[2] if len(sys.argv) == 3 else "cuda:0"
    # No network there, and no progress bars in a log.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:
        sys.exit(f"error: {error}\nhint: run this with the python3 that holds torch and transformers")

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    started = time.perf_counter()
    directory, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model = model.to(device).eval()
    sync()
    load_s = time.perf_counter() - started
    print(f"  transformers {transformers.__version__}, torch {torch.__version__}, "
          f"loaded (GGUF dequantised) in {load_s:.1f} s")

    chat = tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True).to(device)
    with torch.inference_mode():
        output = model.generate(**chat, max_new_tokens=48, do_sample=False)
    answer = tokenizer.decode(output[0, chat["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"  transformers on {device} answers: {answer.strip()!r}")

    inputs = tokenizer(LONG, return_tensors="pt").to(device)
    prompt_tokens = inputs["input_ids"].shape[1]

    def prefill_s():
        sync()
        begin = time.perf_counter()
        with torch.inference_mode():
            model(**inputs, use_cache=True)
        sync()
        return time.perf_counter() - begin

    def generate_s():
        sync()
        begin = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                    do_sample=False)
        sync()
        assert output.shape[1] - prompt_tokens == NEW_TOKENS, output.shape
        return time.perf_counter() - begin

    figures = {"device": device, "prompt_tokens": prompt_tokens, "new_tokens": NEW_TOKENS,
               "load_s": round(load_s, 2), "answer": answer.strip(),
               "transformers": transformers.__version__, "torch": torch.__version__}
    if device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name(device)
    for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = model.to(dtype)
        prefill_s()
        generate_s()
        prompt_tps, decode_tps = [], []
        for _ in range(3):
            prefill = prefill_s()
            whole = generate_s()
            prompt_tps.append(prompt_tokens / prefill)
            # The first new token comes out of the prefill; the other NEW_TOKENS - 1 are decode steps.
            decode_tps.append((NEW_TOKENS - 1) / max(whole - prefill, 1e-9))
        figures[dtype_name] = {"prompt_tps": round(statistics.median(prompt_tps), 1),
                               "decode_tps": round(statistics.median(decode_tps), 1)}
        print(f"  transformers {dtype_name} on {device}: prompt "
              f"{statistics.median(prompt_tps):.0f} tokens/s ({prompt_tokens} tokens), decode "
              f"{statistics.median(decode_tps):.1f} tokens/s (median of 3 runs of {NEW_TOKENS} "
              f"tokens after a warm-up)")
    print("transformers-json: " + json.dumps(figures))
    if "paris" not in answer.lower():
        sys.exit(f"transformers on {device}: the answer does not name Paris")


if __name__ == "__main__":
    main()
