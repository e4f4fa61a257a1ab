//! The tokenizer built from GGUF metadata gives llama.cpp's token ids.
//!
//! The expected ids were recorded once with llama-cpp-python
//! (`Llama.tokenize(text.encode(), add_bos=False, special=True)`) on the test model.

use std::fs::File;

use candle_core::quantized::gguf_file;
use llm_worker_rbee::tokenizer::TextTokenizer;

use crate::support::model_path;

const CASES: &[(&str, &[u32])] = &[
    ("Hello world", &[19556, 905]),
    (
        "1234567890 and 3.14159, year 2024",
        &[
            33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 284, 216, 35, 30, 33, 36, 33, 37, 41, 28, 713,
            216, 34, 32, 34, 36,
        ],
    ),
    (
        "tabs\tand\nnewlines\n\n  indented\r\n",
        &[100, 7366, 197, 397, 198, 2241, 5110, 8866, 641, 6574, 2738],
    ),
    (
        "Café naïve résumé Ångström",
        &[
            51, 1939, 2756, 15486, 46494, 412, 2756, 5422, 2756, 5549, 223, 863, 1321, 45682,
        ],
    ),
    (
        "日本語の文章です。中文测试",
        &[
            23274, 115, 40993, 179, 120, 248, 26453, 29184, 47287, 250, 7365, 117, 39958, 19076,
            28589, 29184, 43222, 229, 16313, 239,
        ],
    ),
    (
        "emoji 😀🎉 👩\u{200d}👩\u{200d}👧",
        &[
            391, 33777, 40303, 218, 10813, 232, 227, 15107, 235, 119, 321, 231, 10813, 235, 119,
            321, 231, 10813, 235, 117,
        ],
    ),
    (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        &[1, 4093, 198, 26843, 665, 2, 198, 1, 520, 9531, 198],
    ),
    (
        " leading space and trailing  ",
        &[2899, 1898, 284, 35079, 256],
    ),
    (
        "don't won't I'm THEY'LL",
        &[12420, 982, 3763, 982, 339, 5248, 6462, 73, 23, 16421],
    ),
];

#[test]
fn token_ids_match_llama_cpp() {
    let path = model_path();
    let mut file = File::open(&path).expect("open the test model");
    let content = gguf_file::Content::read(&mut file).expect("GGUF header");
    let tokenizer = TextTokenizer::from_gguf(&content.metadata, &path).expect("tokenizer");
    for (text, expected) in CASES {
        let ids = tokenizer.encode(text).expect("encode");
        assert_eq!(&ids, expected, "ids of {text:?}");
        let round_trip: Vec<u8> = ids
            .iter()
            .flat_map(|&id| tokenizer.token_bytes(id).to_vec())
            .collect();
        if !text.contains("<|") {
            assert_eq!(
                String::from_utf8_lossy(&round_trip),
                *text,
                "bytes of {text:?}"
            );
        }
    }
}

#[test]
fn end_of_generation_ids_come_from_the_metadata() {
    let path = model_path();
    let mut file = File::open(&path).expect("open the test model");
    let content = gguf_file::Content::read(&mut file).expect("GGUF header");
    let tokenizer = TextTokenizer::from_gguf(&content.metadata, &path).expect("tokenizer");
    // SmolLM2: <|endoftext|> is 0, <|im_end|> (the EOS) is 2.
    assert!(tokenizer.is_end_of_generation(2));
    assert!(tokenizer.is_end_of_generation(0));
    assert!(
        !tokenizer.is_end_of_generation(1),
        "<|im_start|> does not end a turn"
    );
    assert_eq!(
        tokenizer.token_bytes(2),
        b"",
        "control tokens are never shown"
    );
}
