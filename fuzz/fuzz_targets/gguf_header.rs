//! The GGUF header walker: any bytes are a summary or an error, never a panic or an
//! allocation sized by a corrupt length.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let _ = rbee_gguf::check(&mut Cursor::new(data), len);
    let _ = rbee_gguf::summarize(&mut Cursor::new(data), len);
});
