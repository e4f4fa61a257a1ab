//! Round trips of every wire type, and SSE framing.

use rbee_protocol::sse::{SseDecoder, SseFrame};
use rbee_protocol::*;
use serde_json::{Value, json};

/// Parses `value` as `T`, serialises it back, and checks nothing was lost.
fn round_trip<T>(value: Value) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    let parsed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{value} does not parse: {e}"));
    let back = serde_json::to_value(&parsed).expect("serialises");
    assert_eq!(back, value, "round trip changed the JSON");
    let again: T = serde_json::from_value(back).expect("parses again");
    assert_eq!(again, parsed);
    parsed
}

#[test]
fn every_operation_round_trips() {
    let cases = [
        json!({"operation":"status"}),
        json!({"operation":"hive_install","hive_id":"gpu-a","accept_new_host_keys":true}),
        json!({"operation":"hive_uninstall","hive_id":"gpu"}),
        json!({"operation":"hive_start","hive_id":"all","accept_new_host_keys":false}),
        json!({"operation":"hive_stop","hive_id":"gpu-a"}),
        json!({"operation":"hive_status","hive_id":"gpu-a"}),
        json!({"operation":"hive_list"}),
        json!({"operation":"hive_refresh","hive_id":"gpu-*"}),
        json!({"operation":"hive_probe","alias":"gpu-c","host":"10.0.0.3","ssh_port":2222,"groups":["gpu"],"accept_new_host_keys":true}),
        json!({"operation":"hive_add","alias":"gpu-c","host":"10.0.0.3","ssh_user":"rbee","identity_file":"/k","install_dir":"~/.rbee"}),
        json!({"operation":"hive_remove","alias":"gpu-c"}),
        json!({"operation":"model_download","hive_id":"gpu-a","model":"org/repo:f.gguf"}),
        json!({"operation":"model_push","hive_id":"gpu-a","path":"/tmp/m.gguf"}),
        json!({"operation":"model_list","hive_id":"all"}),
        json!({"operation":"model_get","hive_id":"gpu-a","model":"m.gguf"}),
        json!({"operation":"model_delete","hive_id":"gpu-a","model":"m.gguf"}),
        json!({"operation":"model_load","model":"m.gguf","keep_alive":"30s"}),
        json!({"operation":"infer","model":"m","prompt":"hi","keep_alive":"-1"}),
        json!({"operation":"worker_spawn","hive_id":"gpu-a","model":"m.gguf","device":"cpu","keep_alive":"5m"}),
        json!({"operation":"worker_spawn","hive_id":"gpu-a","model":"m.gguf","device":"cuda:0"}),
        json!({"operation":"worker_list"}),
        json!({"operation":"worker_list","hive_id":"gpu-a"}),
        json!({"operation":"worker_get","worker_id":"w1"}),
        json!({"operation":"worker_stop","worker_id":"w1"}),
        json!({"operation":"worker_logs","worker_id":"w1","lines":20,"follow":true}),
        json!({"operation":"wait_ready","model":"m","hive_id":"a","timeout_s":5}),
        json!({"operation":"infer","model":"m","prompt":"hi","max_tokens":3,"stop":["\n"]}),
        json!({"operation":"infer","model":"m","worker_id":"w","messages":[{"role":"user","content":"hi"}],"temperature":0.0,"seed":1}),
        json!({"operation":"inventory_list"}),
        json!({"operation":"inventory_check","hive_id":"all"}),
        json!({"operation":"inventory_reload"}),
        json!({"operation":"playbook_run","name":"site.toml","content":"","check":true,"limit":"gpu"}),
    ];
    let mut names = std::collections::BTreeSet::new();
    for case in cases {
        let op: Operation = round_trip(case.clone());
        assert_eq!(
            case["operation"],
            op.name(),
            "name() disagrees with the tag"
        );
        names.insert(op.name());
    }
    assert_eq!(names.len(), 28, "every variant is covered: {names:?}");
}

#[test]
fn operation_defaults_apply() {
    let op: Operation =
        serde_json::from_value(json!({"operation":"worker_spawn","hive_id":"a","model":"m"}))
            .expect("parses");
    assert_eq!(
        op,
        Operation::WorkerSpawn {
            hive_id: "a".into(),
            model: "m".into(),
            device: rbee_protocol::DeviceSpec::Cpu,
            parallel: None,
            ctx_size: None,
            keep_alive: None,
        }
    );
}

#[test]
fn unknown_operation_is_an_error_naming_it() {
    let err = serde_json::from_value::<Operation>(json!({"operation":"fly"}))
        .expect_err("an unknown operation is refused");
    assert!(err.to_string().contains("fly"), "{err}");
}

#[test]
fn every_job_event_round_trips() {
    let cases = [
        json!({"type":"narration","actor":"queen","action":"start","target":"gpu-a","human":"Starting","level":"info","hive":"gpu-a"}),
        json!({"type":"progress","label":"model.gguf","current":10,"total":100,"unit":"bytes","hive":"a"}),
        json!({"type":"progress","label":"x","current":10,"unit":"bytes"}),
        json!({"type":"token","t":"Par","i":0}),
        json!({"type":"result","hive":"a","kind":"workers","value":[]}),
        json!({"type":"result","kind":"worker_stopped","value":{"worker_id":"w1","outcome":"killed"}}),
        json!({"type":"result","hive":"a","kind":"model_presence","value":{"present":false}}),
        json!({"type":"done"}),
        json!({"type":"error","code":"unreachable","message":"gone","hint":"check it"}),
        json!({"type":"error","code":"not_implemented","message":"later"}),
        json!({"type":"cancelled","reason":"operator"}),
    ];
    for case in cases {
        let event: JobEvent = round_trip(case.clone());
        assert_eq!(case["type"], event.kind());
    }
}

#[test]
fn terminal_events() {
    assert!(JobEvent::Done.is_terminal());
    assert!(
        JobEvent::Cancelled {
            reason: String::new()
        }
        .is_terminal()
    );
    assert!(JobEvent::Error(ErrorDetail::new(ErrorCode::Internal, "x")).is_terminal());
    assert!(!JobEvent::narration("a", "b", "c", "d").is_terminal());
}

#[test]
fn done_is_framed_as_the_seed_has_it() {
    assert_eq!(JobEvent::Done.sse_data(), "[DONE]");
    assert_eq!(
        JobEvent::from_sse("done", "[DONE]").expect("parses"),
        JobEvent::Done
    );
    let error = JobEvent::Error(ErrorDetail::new(ErrorCode::Timeout, "slow").with_hint("wait"));
    assert_eq!(
        JobEvent::from_sse("error", &error.sse_data()).expect("parses"),
        error
    );
}

#[test]
fn unknown_error_codes_parse_as_other() {
    let detail: ErrorDetail =
        serde_json::from_value(json!({"code":"from_the_future","message":"m"})).expect("parses");
    assert_eq!(detail.code, ErrorCode::Other);
}

#[test]
fn error_body_shape() {
    let body: ErrorBody =
        round_trip(json!({"error":{"code":"bad_request","message":"m","hint":"h"}}));
    assert_eq!(body.error.code, ErrorCode::BadRequest);
    assert_eq!(body.error.code.as_str(), "bad_request");
}

#[test]
fn heartbeat_round_trips() {
    let hb: WorkerHeartbeat = round_trip(json!({
        "worker_id":"w1","hive_id":"gpu-a","model":"m.gguf","device":"cuda:0",
        "url":"http://127.0.0.1:9000","state":"ready","queue_depth":2,"slots_total":4,"slots_busy":1,
        "tokens_generated":100,"memory_bytes":1024,"interval_ms":500,"pid":42
    }));
    assert!(hb.state.accepts_requests());
    for state in ["loading", "ready", "busy", "draining", "stopping"] {
        let s: WorkerState = serde_json::from_value(json!(state)).expect("state parses");
        assert_eq!(s.as_str(), state);
    }
}

#[test]
fn capabilities_round_trip() {
    let caps: HiveCapabilities = round_trip(json!({
        "agent_version":"0.1.0","os":"linux","arch":"x86_64",
        "libc":{"kind":"glibc","version":"2.36"},"hostname":"h",
        "devices":[
            {"id":"GPU-0","kind":"cuda","index":0,"name":"H100","memory_total":80,"memory_free":70,"compute_capability":"9.0","driver":"550"},
            {"id":"CPU-0","kind":"cpu","index":0,"name":"EPYC","memory_total":64,"memory_free":32,"cores":16}
        ],
        "ram_total":64,"ram_available":32,"disk_free":1000
    }));
    assert_eq!(caps.devices[0].worker_device().to_string(), "cuda:0");
    assert_eq!(caps.devices[1].worker_device().to_string(), "cpu");
    assert_eq!(caps.platform().to_string(), "linux/x86_64, glibc 2.36");
    // An agent that predates the C library says nothing of it: unknown, not an error.
    let mut older = serde_json::to_value(&caps).expect("json");
    older.as_object_mut().expect("object").remove("libc");
    let older: HiveCapabilities = serde_json::from_value(older).expect("parses");
    assert_eq!(older.libc, rbee_protocol::platform::Libc::Unknown);
}

#[test]
fn inference_events_round_trip() {
    let cases = [
        json!({"type":"started","request_id":"r1","prompt_tokens":5}),
        json!({"type":"token","t":" Paris","i":3}),
        json!({"type":"end","stop_reason":"eos","prompt_tokens":5,"tokens":2,"ttft_ms":12.5,"tokens_per_s":40.0}),
        json!({"type":"error","code":"queue_full","message":"busy"}),
    ];
    for case in cases {
        let event: InferenceEvent = round_trip(case.clone());
        assert_eq!(case["type"], event.kind());
    }
    let _: InferenceRequest = round_trip(json!({
        "prompt":"p","max_tokens":5,"temperature":0.7,"top_p":0.9,"top_k":40,"min_p":0.05,
        "repeat_penalty":1.1,"seed":7,"stop":["a"],"request_id":"r"
    }));
}

#[test]
fn sse_frames_survive_arbitrary_chunking() {
    let frames = vec![
        SseFrame {
            event: "narration".into(),
            data: "{\"a\":1}".into(),
            id: Some("0".into()),
        },
        SseFrame {
            event: "token".into(),
            data: "line one\nline two".into(),
            id: Some("1".into()),
        },
        SseFrame {
            event: "done".into(),
            data: "[DONE]".into(),
            id: None,
        },
    ];
    let mut wire = String::from(": keep-alive\n\n");
    for f in &frames {
        wire.push_str(&f.encode());
    }
    let wire = wire.replace('\n', "\r\n");
    for chunk in [1, 2, 3, 7, 64, wire.len()] {
        let mut decoder = SseDecoder::new();
        let mut got = Vec::new();
        for piece in wire.as_bytes().chunks(chunk) {
            got.extend(decoder.feed(piece).expect("valid"));
        }
        assert_eq!(got, frames, "chunk size {chunk}");
    }
}

/// The fuzz targets start from these lines; the typed results among them must be what
/// an agent and the queen send now, or the fuzzer starts from shapes nobody sends.
#[test]
fn the_typed_results_of_the_fuzz_seeds_parse() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let lines = std::fs::read_to_string(seeds.join("agent_lines/lines.jsonl")).expect("seed");
    let stream = std::fs::read_to_string(seeds.join("job_event/stream.sse")).expect("seed");
    let typed: Vec<&str> = lines
        .lines()
        .chain(stream.lines().filter_map(|l| l.strip_prefix("data: ")))
        .filter(|l| l.contains(r#""type":"result""#) && l.contains(r#""kind""#))
        .collect();
    assert_eq!(typed.len(), 3, "{typed:?}");
    for line in typed {
        let event: JobEvent = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(event.kind(), "result");
    }
}

#[test]
fn device_names_parse_print_back_and_travel_as_strings() {
    use rbee_protocol::DeviceSpec;
    for (text, spec) in [
        ("cpu", DeviceSpec::Cpu),
        ("cuda:1", DeviceSpec::Cuda(1)),
        ("metal", DeviceSpec::Metal),
    ] {
        let parsed: DeviceSpec = text.parse().expect("parses");
        assert_eq!(parsed, spec);
        assert_eq!(parsed.to_string(), text);
        assert_eq!(
            serde_json::to_string(&spec).expect("json"),
            format!("\"{text}\"")
        );
        assert_eq!(
            serde_json::from_str::<DeviceSpec>(&format!("\"{text}\"")).expect("json"),
            spec
        );
    }
    assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
    for bad in ["gpu", "cuda:x", "cuda:+1", "cuda:", ""] {
        let error = bad.parse::<DeviceSpec>().expect_err(bad);
        assert!(
            error.to_string().contains("cpu, cuda:N or metal"),
            "{error}"
        );
    }
    assert!(serde_json::from_str::<DeviceSpec>("\"tpu\"").is_err());
}

#[test]
fn worker_spawn_slots_are_checked_where_they_enter() {
    let spawn = |more: serde_json::Value| {
        let mut op = json!({"operation": "worker_spawn", "hive_id": "a", "model": "m"});
        for (key, value) in more.as_object().expect("fields") {
            op[key] = value.clone();
        }
        serde_json::from_value::<Operation>(op).expect("parses")
    };
    assert!(spawn(json!({})).validate().is_ok());
    assert!(
        spawn(json!({"parallel": 8, "ctx_size": 8192}))
            .validate()
            .is_ok()
    );
    let field = |more| spawn(more).validate().expect_err("refused").field;
    assert_eq!(field(json!({"parallel": 0})), "parallel");
    assert_eq!(field(json!({"parallel": 257})), "parallel");
    // 100 positions for two slots leaves each fewer than 64.
    assert_eq!(field(json!({"parallel": 2, "ctx_size": 100})), "ctx_size");
    assert_eq!(field(json!({"ctx_size": 10})), "ctx_size");
}
