"""Writes other quantizations of the test model with llama.cpp's own quantizer.

The test model ships as Q4_1; the worker benchmark also needs K-quant, Q8_0, Q4_0 and
F16 files of the same weights. llama.cpp requantizes from Q4_1 (`allow_requantize`), so
the results carry Q4_1's rounding on top of their own: fine for speed, not for quality.

    python bench/requantize.py INPUT.gguf OUTPUT.gguf Q4_K_M|Q5_K_M|Q8_0|Q4_0|F16|BF16
"""

import sys

import llama_cpp

FTYPES = {
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
}


def main():
    source, target, kind = sys.argv[1:4]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.allow_requantize = True
    params.nthread = 2
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), params)
    if status != 0:
        sys.exit(f"llama_model_quantize failed with status {status}")


if __name__ == "__main__":
    main()
