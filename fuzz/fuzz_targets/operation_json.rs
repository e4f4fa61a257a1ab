//! The body of `POST /v1/jobs`: any bytes parse into an `Operation` or fail cleanly, and
//! an operation that parses survives its own serialization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbee_protocol::Operation;

fuzz_target!(|data: &[u8]| {
    let Ok(operation) = serde_json::from_slice::<Operation>(data) else {
        return;
    };
    let _ = operation.name();
    let text = serde_json::to_string(&operation).expect("an operation serializes");
    let again: Operation = serde_json::from_str(&text).expect("a serialized operation parses");
    assert_eq!(
        serde_json::to_string(&again).expect("serializes"),
        text,
        "the round trip changed the operation"
    );
});
