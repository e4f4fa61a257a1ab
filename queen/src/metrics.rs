//! The queen's Prometheus metrics, written in the text exposition format at
//! `GET /metrics`. Counters and histograms are recorded as things happen; gauges of
//! workers and hives are read from the registries at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Seconds: from sub-millisecond local calls to minute-long operations.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Tokens per second of one request.
const RATE_BUCKETS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

#[derive(Default)]
struct Families {
    jobs: BTreeMap<Labels, u64>,
    inference: BTreeMap<Labels, u64>,
    tokens: u64,
    ttft: BTreeMap<Labels, Histogram>,
    rate: BTreeMap<Labels, Histogram>,
    ssh: BTreeMap<Labels, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
}

/// Gauges read when scraped.
pub struct Snapshot {
    /// Workers by status (`ready`, `stale`, …).
    pub workers: BTreeMap<String, u64>,
    /// Slots of the schedulable workers, in all and serving, by model.
    pub slots: BTreeMap<String, (u64, u64)>,
    pub hives_total: u64,
    pub hives_reachable: u64,
    /// Per hive: whether its SSH commands fare well (absent until judged) and the
    /// failures in a row.
    pub hive_ssh: Vec<(String, Option<bool>, u32)>,
    /// Per worker: milliseconds since its last heartbeat (the hive → queen direction).
    pub worker_heard_ms: Vec<(String, u64)>,
    pub jobs_running: u64,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Families> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn job_finished(&self, operation: &str, outcome: &str) {
        let labels = vec![
            ("operation", operation.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        *self.lock().jobs.entry(labels).or_default() += 1;
    }

    pub fn inference_finished(&self, model: &str, outcome: &str) {
        let labels = vec![("model", model.to_owned()), ("outcome", outcome.to_owned())];
        *self.lock().inference.entry(labels).or_default() += 1;
    }

    /// A request that produced tokens: its time to first token and rate.
    pub fn inference_timing(&self, model: &str, ttft: Duration, tokens: u64, tokens_per_s: f64) {
        let labels = vec![("model", model.to_owned())];
        let mut families = self.lock();
        families.tokens += tokens;
        families
            .ttft
            .entry(labels.clone())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(ttft.as_secs_f64());
        if tokens > 0 {
            families
                .rate
                .entry(labels)
                .or_insert_with(|| Histogram::new(&RATE_BUCKETS))
                .observe(tokens_per_s);
        }
    }

    /// One agent command on a hive, over SSH or in-process.
    pub fn ssh_operation(&self, command: &str, transport: &str, took: Duration) {
        let labels = vec![
            ("command", command.to_owned()),
            ("transport", transport.to_owned()),
        ];
        self.lock()
            .ssh
            .entry(labels)
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// The exposition text.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let families = self.lock();
        let mut out = String::new();
        counter(
            &mut out,
            "rbee_jobs_total",
            "Jobs finished, by operation and outcome.",
            &families.jobs,
        );
        gauge(
            &mut out,
            "rbee_jobs_running",
            "Jobs running now.",
            [(Vec::new(), snapshot.jobs_running)],
        );
        counter(
            &mut out,
            "rbee_inference_requests_total",
            "Inference requests finished, by model and outcome.",
            &families.inference,
        );
        counter(
            &mut out,
            "rbee_tokens_generated_total",
            "Tokens relayed from workers to clients.",
            &BTreeMap::from([(Vec::new(), families.tokens)]),
        );
        histogram(
            &mut out,
            "rbee_time_to_first_token_seconds",
            "Time from a request reaching the queen to its first token.",
            &families.ttft,
        );
        histogram(
            &mut out,
            "rbee_tokens_per_second",
            "Generation rate of one request, as its worker measured it.",
            &families.rate,
        );
        histogram(
            &mut out,
            "rbee_ssh_operation_seconds",
            "Agent commands on hives, by command and transport (ssh or in-process).",
            &families.ssh,
        );
        gauge(
            &mut out,
            "rbee_workers",
            "Workers the queen knows, by status.",
            snapshot
                .workers
                .iter()
                .map(|(status, n)| (vec![("status", status.clone())], *n)),
        );
        gauge(
            &mut out,
            "rbee_worker_slots",
            "Requests the schedulable workers generate at once, by model.",
            snapshot
                .slots
                .iter()
                .map(|(model, (total, _))| (vec![("model", model.clone())], *total)),
        );
        gauge(
            &mut out,
            "rbee_worker_slots_busy",
            "Slots serving a request, as the workers' last heartbeats said, by model.",
            snapshot
                .slots
                .iter()
                .map(|(model, (_, busy))| (vec![("model", model.clone())], *busy)),
        );
        gauge(
            &mut out,
            "rbee_hives",
            "Hives in the inventory.",
            [(Vec::new(), snapshot.hives_total)],
        );
        gauge(
            &mut out,
            "rbee_hives_reachable",
            "Hives marked online by their last operation.",
            [(Vec::new(), snapshot.hives_reachable)],
        );
        gauge(
            &mut out,
            "rbee_hive_ssh_healthy",
            "1 while a hive's SSH commands fare well, 0 after failures in a row (ssh_unhealthy_after).",
            snapshot.hive_ssh.iter().filter_map(|(hive, healthy, _)| {
                healthy.map(|h| (vec![("hive", hive.clone())], u64::from(h)))
            }),
        );
        gauge(
            &mut out,
            "rbee_worker_heartbeat_age_seconds",
            "Time since each worker's last heartbeat reached the queen.",
            snapshot
                .worker_heard_ms
                .iter()
                .map(|(worker, ms)| (vec![("worker_id", worker.clone())], *ms as f64 / 1000.0)),
        );
        gauge(
            &mut out,
            "rbee_hive_ssh_consecutive_failures",
            "SSH commands to a hive that failed since its last success.",
            snapshot
                .hive_ssh
                .iter()
                .map(|(hive, _, failures)| (vec![("hive", hive.clone())], u64::from(*failures))),
        );
        out
    }
}

fn label_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if let Some((name, value)) = extra {
        parts.push(format!("{name}=\"{value}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, values: &BTreeMap<Labels, u64>) {
    header(out, name, help, "counter");
    for (labels, value) in values {
        let _ = writeln!(out, "{name}{} {value}", label_text(labels, None));
    }
}

fn gauge<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, V)>,
) {
    header(out, name, help, "gauge");
    for (labels, value) in values {
        let _ = writeln!(out, "{name}{} {value}", label_text(&labels, None));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, values: &BTreeMap<Labels, Histogram>) {
    header(out, name, help, "histogram");
    for (labels, histogram) in values {
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            let le = Some(("le", bound.to_string()));
            let _ = writeln!(out, "{name}_bucket{} {count}", label_text(labels, le));
        }
        let inf = Some(("le", "+Inf".to_owned()));
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            label_text(labels, inf),
            histogram.count
        );
        let plain = label_text(labels, None);
        let _ = writeln!(out, "{name}_sum{plain} {}", histogram.sum);
        let _ = writeln!(out, "{name}_count{plain} {}", histogram.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let metrics = Metrics::default();
        metrics.inference_timing("a\"b", Duration::from_millis(30), 5, 12.0);
        metrics.inference_timing("a\"b", Duration::from_millis(3), 5, 50.0);
        let text = metrics.render(&Snapshot {
            workers: BTreeMap::from([("ready".to_owned(), 2)]),
            slots: BTreeMap::from([("m".to_owned(), (8, 3))]),
            hives_total: 3,
            hives_reachable: 1,
            hive_ssh: vec![
                ("a".to_owned(), Some(true), 0),
                ("b".to_owned(), Some(false), 4),
                ("c".to_owned(), None, 1),
            ],
            worker_heard_ms: vec![("w1".to_owned(), 1500)],
            jobs_running: 0,
        });
        assert!(
            text.contains("rbee_hive_ssh_healthy{hive=\"b\"} 0"),
            "{text}"
        );
        // Not judged yet: no health sample, only the failures.
        assert!(
            !text.contains("rbee_hive_ssh_healthy{hive=\"c\"}"),
            "{text}"
        );
        assert!(
            text.contains("rbee_hive_ssh_consecutive_failures{hive=\"c\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "rbee_time_to_first_token_seconds_bucket{model=\"a\\\"b\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "rbee_time_to_first_token_seconds_bucket{model=\"a\\\"b\",le=\"0.05\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("rbee_tokens_generated_total 10"), "{text}");
        assert!(text.contains("rbee_workers{status=\"ready\"} 2"), "{text}");
        assert!(text.contains("rbee_worker_slots{model=\"m\"} 8"), "{text}");
        assert!(
            text.contains("rbee_worker_slots_busy{model=\"m\"} 3"),
            "{text}"
        );
    }
}
