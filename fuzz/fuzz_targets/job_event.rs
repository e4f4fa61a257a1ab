//! The keeper's side of a job stream: SSE bytes in any chunking, each frame parsed into a
//! `JobEvent`; an event that parses survives its own framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbee_protocol::JobEvent;
use rbee_protocol::sse::SseDecoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut into two chunks.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(stream.len());
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    for chunk in [&stream[..cut], &stream[cut..]] {
        match decoder.feed(chunk) {
            Ok(more) => frames.extend(more),
            Err(_) => return,
        }
    }
    for frame in frames {
        let Ok(event) = JobEvent::from_sse(&frame.event, &frame.data) else {
            continue;
        };
        let _ = event.is_terminal();
        let json = serde_json::to_string(&event).expect("an event serializes");
        let _: JobEvent = serde_json::from_str(&json).expect("a serialized event parses");
    }
});
