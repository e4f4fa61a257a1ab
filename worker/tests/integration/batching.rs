//! Several requests at once: continuous batching, slots, prompt-prefix reuse and the
//! context limit, on the real model through the worker's HTTP API.

use std::io::Write;
use std::process::{Command, Stdio};

use futures::future::join_all;
use rbee_protocol::{ErrorBody, InferenceEvent, StopReason};
use serde_json::{Value, json};

use crate::support::{EventStream, NO_QUEEN, Worker, text_of};

/// Different prompts, so that the slots' sequences differ in length and content.
const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "List three colours:",
    "Once upon a time, in a small village,",
    "The best way to learn a language is",
    "def fibonacci(n):",
    "Water boils at",
    "My favourite season is autumn because",
];

fn greedy(prompt: &str, max_tokens: u32) -> Value {
    json!({ "prompt": prompt, "temperature": 0, "max_tokens": max_tokens })
}

fn stop_reason(events: &[InferenceEvent]) -> StopReason {
    match events.last() {
        Some(InferenceEvent::End { stop_reason, .. }) => *stop_reason,
        other => panic!("stream did not end with `end`: {other:?}"),
    }
}

async fn text_get(worker: &Worker, route: &str) -> String {
    let response = worker
        .request(reqwest::Method::GET, route)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "{route}");
    response.text().await.expect("body")
}

/// The value of an unlabelled sample in Prometheus text, or of a labelled one given
/// with its labels.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn a_greedy_request_gives_the_same_tokens_alone_and_beside_seven_others() {
    let worker = Worker::start(NO_QUEEN, None, &["--parallel", "8"]);
    let ready = worker.ready().await;
    assert_eq!(ready["slots_total"], 8, "{ready}");

    let mut alone = Vec::new();
    for prompt in PROMPTS {
        alone.push(text_of(&worker.infer(greedy(prompt, 24)).await));
    }
    let before = text_get(&worker, "/metrics").await;
    let together = join_all(PROMPTS.iter().map(|p| worker.infer(greedy(p, 24)))).await;
    for ((prompt, alone), events) in PROMPTS.iter().zip(&alone).zip(&together) {
        assert_eq!(&text_of(events), alone, "prompt {prompt:?}");
    }

    // The eight ran in shared steps, not one after another.
    let after = text_get(&worker, "/metrics").await;
    let steps = sample(&after, "rbee_worker_step_sequences_count")
        - sample(&before, "rbee_worker_step_sequences_count");
    let sequences = sample(&after, "rbee_worker_step_sequences_sum")
        - sample(&before, "rbee_worker_step_sequences_sum");
    assert!(
        sequences / steps > 4.0,
        "{sequences} sequences in {steps} steps"
    );
}

#[tokio::test]
async fn a_cancelled_slot_leaves_the_others_outputs_unchanged() {
    let worker = Worker::start(NO_QUEEN, None, &["--parallel", "4"]);
    worker.ready().await;
    let prompts = &PROMPTS[..3];
    let mut alone = Vec::new();
    for prompt in prompts {
        alone.push(text_of(&worker.infer(greedy(prompt, 32)).await));
    }

    // A long request that the client abandons after its first token, beside the three.
    let abandoned = async {
        let response = worker
            .request(reqwest::Method::POST, "/v1/inference")
            .json(&greedy("Tell me a very long story about dragons.", 2000))
            .send()
            .await
            .expect("request");
        let mut stream = EventStream::new(response);
        while let Some(event) = stream.next().await {
            if matches!(event, InferenceEvent::Token { .. }) {
                break;
            }
        }
        // Dropping the stream closes the connection.
    };
    let (others, ()) = tokio::join!(
        join_all(prompts.iter().map(|p| worker.infer(greedy(p, 32)))),
        abandoned
    );
    for ((prompt, alone), events) in prompts.iter().zip(&alone).zip(&others) {
        assert_eq!(&text_of(events), alone, "prompt {prompt:?}");
    }
    // The abandoned slot was freed: every slot is idle again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let slots: Value = serde_json::from_str(&text_get(&worker, "/slots").await).expect("JSON");
        let busy = slots["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .filter(|s| s["state"] != "idle")
            .count();
        if busy == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{slots}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_longer_than_a_slot_is_refused_and_generation_stops_at_the_context() {
    // 256 positions in all, 128 for each of the two slots.
    let worker = Worker::start(NO_QUEEN, None, &["--parallel", "2", "--ctx-size", "256"]);
    let ready = worker.ready().await;
    assert_eq!(ready["model"]["context_length"], 128, "{ready}");

    let refused = worker
        .request(reqwest::Method::POST, "/v1/inference")
        .json(&greedy("Count with me: 1, 2, 3, 4,", 200))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 400);
    let error: ErrorBody = refused.json().await.expect("error body");
    assert!(
        error.error.message.contains("128") && error.error.message.contains("max_tokens"),
        "{error:?}"
    );
    assert!(error.error.hint.is_some(), "{error:?}");

    // Without max_tokens, counting runs to the end of the slot's context.
    let events = worker
        .infer(json!({ "prompt": "Count with me: 1, 2, 3, 4,", "temperature": 0 }))
        .await;
    assert_eq!(
        stop_reason(&events),
        StopReason::Context,
        "{:?}",
        events.last()
    );
    let Some(InferenceEvent::End {
        prompt_tokens,
        tokens,
        ..
    }) = events.last()
    else {
        unreachable!()
    };
    assert_eq!(prompt_tokens + tokens, 128);
}

#[tokio::test]
async fn a_reused_prefix_gives_the_same_tokens_as_a_fresh_slot() {
    let history = "You are a helpful assistant who answers questions about geography. \
        The user asks about rivers, mountains and capitals, and you answer briefly and \
        accurately, with one fact at most in each answer.";
    let turn = |question: &str| {
        json!({
            "messages": [
                {"role": "system", "content": history},
                {"role": "user", "content": question},
            ],
            "temperature": 0,
            "max_tokens": 20,
        })
    };
    let first = turn("What is the capital of France?");
    let second = json!({
        "messages": [
            {"role": "system", "content": history},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And the longest river in France?"},
        ],
        "temperature": 0,
        "max_tokens": 20,
    });

    // A worker with one slot keeps the first turn's cache for the repeat and for the
    // second turn.
    let reusing = Worker::start(NO_QUEEN, None, &["--parallel", "1"]);
    reusing.ready().await;
    let once = text_of(&reusing.infer(first.clone()).await);
    let repeat = reusing.infer(first.clone()).await;
    let next_turn = text_of(&reusing.infer(second.clone()).await);
    let metrics = text_get(&reusing, "/metrics").await;
    let reused = sample(&metrics, "rbee_worker_prompt_tokens_reused_total");
    let Some(InferenceEvent::Started { prompt_tokens, .. }) = repeat.first() else {
        panic!("no start: {repeat:?}");
    };
    assert!(
        reused >= f64::from(2 * prompt_tokens - 2),
        "the repeat and the next turn took their prefixes from the cache: {reused} reused"
    );
    assert_eq!(text_of(&repeat), once);

    // A fresh worker runs the second turn from nothing and must agree.
    let fresh = Worker::start(NO_QUEEN, None, &["--parallel", "1"]);
    fresh.ready().await;
    assert_eq!(text_of(&fresh.infer(second).await), next_turn);
}

#[tokio::test]
async fn a_prefix_copied_from_a_busy_slot_gives_the_same_tokens_as_a_fresh_slot() {
    // Two conversations with one system prompt: the second starts while the first
    // generates, in the other slot, and takes the system prompt's cache from it.
    let system = "You are a helpful assistant who answers questions about geography. \
        The user asks about rivers, mountains and capitals, and you answer briefly and \
        accurately, with one fact at most in each answer.";
    let ask = |question: &str, max_tokens: u32| {
        json!({
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "temperature": 0,
            "max_tokens": max_tokens,
        })
    };
    let worker = Worker::start(NO_QUEEN, None, &["--parallel", "2"]);
    worker.ready().await;
    let first = worker.infer(ask(
        "Write a long story about a river and the towns along it.",
        120,
    ));
    let second = async {
        // Once the first conversation generates, its slot holds the system prompt.
        loop {
            let slots: Value =
                serde_json::from_str(&text_get(&worker, "/slots").await).expect("JSON");
            if slots["slots"]
                .as_array()
                .expect("slots")
                .iter()
                .any(|s| s["state"] == "generating")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        worker
            .infer(ask("What is the capital of France?", 16))
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(!text_of(&first).is_empty());
    // Both slots hold a conversation, so the second did not follow the first into its
    // slot; what it reused there was copied.
    let slots: Value = serde_json::from_str(&text_get(&worker, "/slots").await).expect("JSON");
    let cached: Vec<u64> = slots["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| s["tokens_cached"].as_u64().expect("tokens_cached"))
        .collect();
    assert!(cached.iter().all(|&n| n > 30), "{cached:?}");
    let metrics = text_get(&worker, "/metrics").await;
    let reused = sample(&metrics, "rbee_worker_prompt_tokens_reused_total");
    assert!(
        reused >= 30.0,
        "the system prompt was copied: {reused} reused"
    );

    let fresh = Worker::start(NO_QUEEN, None, &["--parallel", "1"]);
    fresh.ready().await;
    let alone = fresh.infer(ask("What is the capital of France?", 16)).await;
    assert_eq!(text_of(&second), text_of(&alone));
    assert!(text_of(&alone).contains("Paris"), "{}", text_of(&alone));
}

#[tokio::test]
async fn slots_and_metrics_are_served_and_pass_promtool() {
    let worker = Worker::start(NO_QUEEN, None, &["--parallel", "3"]);
    worker.ready().await;
    worker.infer(greedy("The capital of France is", 8)).await;

    let slots: Value = serde_json::from_str(&text_get(&worker, "/slots").await).expect("JSON");
    let slots = slots["slots"].as_array().expect("slots array");
    assert_eq!(slots.len(), 3);
    assert!(slots.iter().all(|s| s["state"] == "idle"), "{slots:?}");
    assert!(
        slots.iter().any(|s| s["tokens_cached"].as_u64() > Some(5)),
        "one slot keeps the request's tokens: {slots:?}"
    );

    let metrics = text_get(&worker, "/metrics").await;
    assert_eq!(sample(&metrics, "rbee_worker_slots"), 3.0);
    assert_eq!(sample(&metrics, "rbee_worker_slots_busy"), 0.0);
    assert_eq!(sample(&metrics, "rbee_worker_requests_total"), 1.0);
    assert!(sample(&metrics, "rbee_worker_tokens_generated_total") >= 1.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (install-deps.sh installs the prometheus package)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
