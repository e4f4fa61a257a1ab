//! The worker's integration tests: the real binary, the real model, real HTTP.
//!
//! The test model comes from `scripts/fetch-test-model.sh` (or `RBEE_TEST_MODEL`).

mod batching;
mod cpu_engine;
mod families;
mod gemma;
mod http;
mod llama_cpp;
mod load_errors;
mod portable;
mod real;
mod support;
mod tokenizer_ids;
