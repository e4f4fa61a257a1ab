//! What the tests share: running the agent, reading its event lines, and this
//! machine's facts from /proc to compare with.

use std::process::{Command, Output, Stdio};

use rbee_protocol::JobEvent;

pub const AGENT: &str = env!("CARGO_BIN_EXE_rbee-hive");

/// Runs the agent with `args` and no stdin; every stdout line must be one event.
pub fn run_agent(args: &[&str]) -> (Output, Vec<JobEvent>) {
    let output = Command::new(AGENT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rbee-hive");
    let events = events_of(&output);
    (output, events)
}

/// Parses stdout as event lines, failing the test on any line that is not one.
pub fn events_of(output: &Output) -> Vec<JobEvent> {
    let stdout = String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8");
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("stdout line is not a job event ({error}): {line:?}")
            })
        })
        .collect()
}

/// The one `result` event's answer.
pub fn result_of(events: &[JobEvent]) -> rbee_protocol::OperationResult {
    let results: Vec<&rbee_protocol::OperationResult> = events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Result { result, .. } => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1, "exactly one result event in {events:?}");
    results[0].clone()
}

/// `MemTotal` of this machine in bytes, read independently of the agent.
pub fn mem_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

/// Processor entries in /proc/cpuinfo.
pub fn cpuinfo_processors() -> u32 {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let count = cpuinfo
        .lines()
        .filter(|line| line.split(':').next().map(str::trim) == Some("processor"))
        .count();
    u32::try_from(count).expect("a sane processor count")
}
