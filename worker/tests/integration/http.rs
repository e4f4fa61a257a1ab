//! The worker binary over HTTP: answers, limits, cancellation, auth, heartbeats.

use std::time::Duration;

use rbee_protocol::{ErrorBody, ErrorCode, InferenceEvent, StopReason, WorkerState};
use serde_json::json;

use crate::support::{EventStream, NO_QUEEN, Queen, Worker, text_of};

fn end_of(events: &[InferenceEvent]) -> (StopReason, u32) {
    match events.last() {
        Some(InferenceEvent::End {
            stop_reason,
            tokens,
            ..
        }) => (*stop_reason, *tokens),
        other => panic!("stream did not end with `end`: {other:?}"),
    }
}

#[tokio::test]
async fn greedy_chat_answers_paris_deterministically() {
    let worker = Worker::start(NO_QUEEN, None, &[]);
    let ready = worker.ready().await;
    assert_eq!(ready["model"]["architecture"], "llama");
    let health: serde_json::Value = worker
        .request(reqwest::Method::GET, "/health")
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health JSON");
    assert_eq!(health["engine"], ready["model"]["engine"], "{health}");
    assert!(
        health["engine"]
            .as_str()
            .is_some_and(|e| e.starts_with("cpu-")),
        "{health}"
    );
    let body = json!({
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "temperature": 0.0,
        "max_tokens": 16,
    });
    let events = worker.infer(body.clone()).await;
    assert!(
        matches!(events.first(), Some(InferenceEvent::Started { prompt_tokens, .. }) if *prompt_tokens > 10)
    );
    let answer = text_of(&events);
    assert!(answer.contains("Paris"), "answer: {answer:?}");
    assert_eq!(
        end_of(&events).0,
        StopReason::Eos,
        "a one-word answer ends the turn"
    );
    let again = worker.infer(body).await;
    assert_eq!(text_of(&again), answer, "temperature 0 is deterministic");
    // A prompt in the chat format is that one user message through the template.
    let as_prompt = worker
        .infer(json!({
            "prompt": "What is the capital of France? Answer in one word.",
            "prompt_format": "chat",
            "temperature": 0.0,
            "max_tokens": 16,
        }))
        .await;
    assert_eq!(text_of(&as_prompt), answer);
}

#[tokio::test]
async fn logprobs_come_with_each_token_when_asked() {
    let worker = Worker::start(NO_QUEEN, None, &[]);
    worker.ready().await;
    let body = |extra: serde_json::Value| {
        let mut body =
            json!({ "prompt": "The capital of France is", "temperature": 0, "max_tokens": 6 });
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let events = worker.infer(body(json!({ "top_logprobs": 4 }))).await;
    let entries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            InferenceEvent::Token { lp, .. } => Some(lp.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    let (_, tokens) = end_of(&events);
    assert_eq!(entries.len(), tokens as usize, "one entry per token");
    let spelled: String = entries.iter().map(|e| e.token.as_str()).collect();
    assert_eq!(spelled, text_of(&events));
    for entry in &entries {
        assert_eq!(entry.top.len(), 4, "{entry:?}");
        // Greedy: the token chosen is the most likely one.
        assert_eq!(entry.top[0].token, entry.token, "{entry:?}");
        assert_eq!(entry.top[0].logprob, entry.logprob);
        assert!(entry.logprob <= 0.0 && entry.logprob > -30.0, "{entry:?}");
        assert!(
            entry.top.windows(2).all(|w| w[0].logprob >= w[1].logprob),
            "{entry:?}"
        );
    }
    // Asking changes nothing of the text, and not asking sends none.
    let plain = worker.infer(body(json!({}))).await;
    assert_eq!(text_of(&plain), text_of(&events));
    assert!(
        plain
            .iter()
            .all(|e| !matches!(e, InferenceEvent::Token { lp, .. } if !lp.is_empty()))
    );
    let bare = worker.infer(body(json!({ "logprobs": true }))).await;
    assert!(bare.iter().any(
        |e| matches!(e, InferenceEvent::Token { lp, .. } if !lp.is_empty() && lp[0].top.is_empty())
    ));
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_are_honoured() {
    let worker = Worker::start(NO_QUEEN, None, &[]);
    worker.ready().await;
    let prompt = "The three most popular programming languages are";
    let events = worker
        .infer(json!({ "prompt": prompt, "temperature": 0, "max_tokens": 12 }))
        .await;
    assert_eq!(end_of(&events), (StopReason::Length, 12));
    let full = text_of(&events);

    // Stop on a piece of the greedy text: the output must end right before it.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() > 4, "greedy text too short: {full:?}");
    let stop = words[3];
    let cut = full.find(stop).expect("the word is in the text");
    let events = worker
        .infer(json!({ "prompt": prompt, "temperature": 0, "max_tokens": 12, "stop": [stop] }))
        .await;
    assert_eq!(end_of(&events).0, StopReason::Stop);
    assert_eq!(text_of(&events), full[..cut]);
}

#[tokio::test]
async fn bad_requests_get_an_error_body() {
    let worker = Worker::start(NO_QUEEN, None, &[]);
    worker.ready().await;
    for (body, code) in [
        ("{not json", ErrorCode::InvalidJson),
        (r#"{"prompt":"x","messages":[]}"#, ErrorCode::BadRequest),
        (r#"{"prompt":"x","temperature":-1}"#, ErrorCode::BadRequest),
        (r#"{"prompt":"x","max_tokens":0}"#, ErrorCode::BadRequest),
        (
            r#"{"prompt":"x","temperature":1.1111111111111111e24}"#,
            ErrorCode::BadRequest,
        ),
        (r#"{"prompt":"x","top_p":-0.5}"#, ErrorCode::BadRequest),
        (r#"{"prompt":"x","min_p":5}"#, ErrorCode::BadRequest),
        (r#"{"prompt":"x","top_logprobs":21}"#, ErrorCode::BadRequest),
        (
            r#"{"prompt":"x","stop":["a","b","c","d","e"]}"#,
            ErrorCode::BadRequest,
        ),
    ] {
        let response = worker
            .request(reqwest::Method::POST, "/v1/inference")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{body}");
        let error: ErrorBody = response.json().await.expect("error body");
        assert_eq!(error.error.code, code, "{body}");
        // A field out of range is named, with what it may be.
        if let Some(field) = ["temperature", "top_p", "min_p", "stop", "top_logprobs"]
            .into_iter()
            .find(|f| body.contains(f))
        {
            assert!(error.error.message.contains(field), "{error:?}");
        }
    }
}

#[tokio::test]
async fn a_disconnect_cancels_generation() {
    let worker = Worker::start(NO_QUEEN, None, &[]);
    worker.ready().await;
    // Greedy, so the cancelled request would run exactly as this one: it does not end by
    // itself within 200 tokens, so a stop before that is the disconnect's doing.
    let body = |max_tokens: u32| json!({ "prompt": "Count with me: 1, 2, 3, 4,", "max_tokens": max_tokens, "temperature": 0 });
    let whole = worker.infer(body(200)).await;
    assert_eq!(end_of(&whole), (StopReason::Length, 200));

    let before = worker.ready().await["tokens_generated"]
        .as_u64()
        .expect("count");
    let response = worker
        .request(reqwest::Method::POST, "/v1/inference")
        .json(&body(200))
        .send()
        .await
        .expect("request");
    let mut stream = EventStream::new(response);
    let mut tokens = 0;
    while tokens < 3 {
        if let Some(InferenceEvent::Token { .. }) = stream.next().await {
            tokens += 1;
        }
    }
    drop(stream);

    // The worker notices at its next step: its slot is free again and its token count
    // stops far short of the 200 the request would have made.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let slots: serde_json::Value = worker
            .request(reqwest::Method::GET, "/slots")
            .send()
            .await
            .expect("slots")
            .json()
            .await
            .expect("slots JSON");
        let busy = slots["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .any(|s| s["state"] != "idle");
        if !busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot still busy: {slots}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = worker.ready().await;
    assert_eq!(after["state"], "ready");
    let made = after["tokens_generated"].as_u64().expect("count") - before;
    assert!(
        (3..100).contains(&made),
        "{made} tokens after the disconnect"
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let worker = Worker::start(
        NO_QUEEN,
        None,
        &["--queue-capacity", "1", "--parallel", "1"],
    );
    worker.ready().await;
    let long = json!({ "prompt": "Tell me everything about the sea.", "max_tokens": 3000, "temperature": 1.0, "seed": 2, "min_p": 0 });
    let running = worker
        .request(reqwest::Method::POST, "/v1/inference")
        .json(&long)
        .send()
        .await
        .expect("first request");
    let mut running = EventStream::new(running);
    assert!(matches!(
        running.next().await,
        Some(InferenceEvent::Started { .. })
    ));
    let queued = worker
        .request(reqwest::Method::POST, "/v1/inference")
        .json(&long)
        .send()
        .await
        .expect("second request");
    assert_eq!(queued.status(), 200);
    let refused = worker
        .request(reqwest::Method::POST, "/v1/inference")
        .json(&long)
        .send()
        .await
        .expect("third request");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: ErrorBody = refused.json().await.expect("error body");
    assert_eq!(error.error.code, ErrorCode::QueueFull);
}

#[tokio::test]
async fn the_worker_token_guards_every_route_but_health() {
    let worker = Worker::start(NO_QUEEN, Some("s3cret-token"), &[]);
    worker.ready().await;
    let client = reqwest::Client::new();
    let url = |route: &str| format!("{}{route}", worker.url);

    let health = client.get(url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    for route in ["/ready", "/v1/inference"] {
        let method = if route == "/ready" {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let anonymous = client
            .request(method.clone(), url(route))
            .send()
            .await
            .expect("send");
        assert_eq!(anonymous.status(), 401, "{route} without a token");
        let wrong = client
            .request(method, url(route))
            .bearer_auth("s3cret-tokem")
            .send()
            .await
            .expect("send");
        assert_eq!(wrong.status(), 401, "{route} with a wrong token");
        let error: ErrorBody = wrong.json().await.expect("error body");
        assert_eq!(error.error.code, ErrorCode::Unauthorized);
    }
    let events = worker
        .infer(json!({ "prompt": "Hello", "max_tokens": 2, "temperature": 0 }))
        .await;
    assert_eq!(end_of(&events).0, StopReason::Length);
}

// Multi-threaded so the stand-in queen keeps answering while the test waits for the
// worker to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_follow_the_worker_until_sigterm() {
    let queen = Queen::start().await;
    let mut worker = Worker::start(&queen.url, None, &["--heartbeat-interval", "0.2"]);
    worker.ready().await;
    worker
        .infer(json!({ "prompt": "Hi", "max_tokens": 3, "temperature": 0 }))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = worker.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let beats = queen.beats();
    let states: Vec<WorkerState> = beats.iter().map(|b| b.state).collect();
    assert_eq!(states.first(), Some(&WorkerState::Loading), "{states:?}");
    assert_eq!(states.last(), Some(&WorkerState::Stopping), "{states:?}");
    assert!(states.contains(&WorkerState::Ready), "{states:?}");
    let last = beats.last().expect("a beat");
    assert_eq!(last.worker_id, "w-test");
    assert_eq!(last.hive_id, "localhost");
    assert_eq!(last.model, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(last.url, worker.url);
    assert_eq!(last.tokens_generated, 3);
    assert!(last.memory_bytes > 50_000_000, "the model is resident");
    // Which engine computes the tokens: unknown while loading, then the CPU engine's.
    assert_eq!(beats[0].engine, None, "{:?}", beats[0]);
    let engine = last.engine.as_deref().expect("the engine, once loaded");
    assert!(engine.starts_with("cpu-"), "{engine}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let mut worker = Worker::start(NO_QUEEN, None, &["--drain-timeout", "120"]);
    worker.ready().await;
    let response = worker
        .request(reqwest::Method::POST, "/v1/inference")
        .json(&json!({ "prompt": "Count from one to fifty:", "max_tokens": 20, "temperature": 0 }))
        .send()
        .await
        .expect("request");
    let mut stream = EventStream::new(response);
    assert!(matches!(
        stream.next().await,
        Some(InferenceEvent::Started { .. })
    ));
    worker.sigterm();
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event);
    }
    assert!(
        matches!(
            last,
            Some(InferenceEvent::End {
                stop_reason: StopReason::Length | StopReason::Eos,
                ..
            })
        ),
        "the request ran to its end, not cancelled: {last:?}"
    );
    assert!(worker.wait_exit().success());
}
