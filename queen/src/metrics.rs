//! The queen's Prometheus metrics at `GET /metrics`, kept and written by the
//! `prometheus-client` crate in the Prometheus text format (0.0.4, what `promtool
//! check metrics` reads). Counters and histograms are recorded as things happen;
//! gauges of workers and hives are read from the registries at scrape time.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The exposition's `Content-Type`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Seconds: from sub-millisecond local calls to minute-long operations.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Tokens per second of one request.
const RATE_BUCKETS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InferenceLabels {
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
    transport: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics recorded as things happen. Each field is a handle on shared atomic
/// state, so a scrape registers clones of them beside the gauges it reads.
pub struct Metrics {
    jobs: Family<JobLabels, Counter>,
    inference: Family<InferenceLabels, Counter>,
    tokens: Counter,
    ttft: Histograms<ModelLabels>,
    rate: Histograms<ModelLabels>,
    ssh: Histograms<CommandLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            jobs: Family::default(),
            inference: Family::default(),
            tokens: Counter::default(),
            ttft: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            rate: Family::new_with_constructor(|| Histogram::new(RATE_BUCKETS)),
            ssh: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        }
    }
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
    pub fn job_finished(&self, operation: &str, outcome: &str) {
        let labels = JobLabels {
            operation: operation.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.jobs.get_or_create(&labels).inc();
    }

    pub fn inference_finished(&self, model: &str, outcome: &str) {
        let labels = InferenceLabels {
            model: model.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.inference.get_or_create(&labels).inc();
    }

    /// A request that produced tokens: its time to first token and rate.
    pub fn inference_timing(&self, model: &str, ttft: Duration, tokens: u64, tokens_per_s: f64) {
        let labels = ModelLabels {
            model: model.to_owned(),
        };
        self.tokens.inc_by(tokens);
        self.ttft.get_or_create(&labels).observe(ttft.as_secs_f64());
        if tokens > 0 {
            self.rate.get_or_create(&labels).observe(tokens_per_s);
        }
    }

    /// One agent command on a hive, over SSH or in-process.
    pub fn ssh_operation(&self, command: &str, transport: &str, took: Duration) {
        let labels = CommandLabels {
            command: command.to_owned(),
            transport: transport.to_owned(),
        };
        self.ssh.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// The exposition text: the recorded metrics and the snapshot's gauges, in one
    /// registry made for this scrape.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut registry = Registry::default();
        registry.register(
            "rbee_jobs",
            "Jobs finished, by operation and outcome",
            self.jobs.clone(),
        );
        registry.register(
            "rbee_jobs_running",
            "Jobs running now",
            gauge(snapshot.jobs_running),
        );
        registry.register(
            "rbee_inference_requests",
            "Inference requests finished, by model and outcome",
            self.inference.clone(),
        );
        registry.register(
            "rbee_tokens_generated",
            "Tokens relayed from workers to clients",
            self.tokens.clone(),
        );
        registry.register_with_unit(
            "rbee_time_to_first_token",
            "Time from a request reaching the queen to its first token",
            Unit::Seconds,
            self.ttft.clone(),
        );
        registry.register(
            "rbee_tokens_per_second",
            "Generation rate of one request, as its worker measured it",
            self.rate.clone(),
        );
        registry.register_with_unit(
            "rbee_ssh_operation",
            "Agent commands on hives, by command and transport (ssh or in-process)",
            Unit::Seconds,
            self.ssh.clone(),
        );
        registry.register(
            "rbee_workers",
            "Workers the queen knows, by status",
            gauges(
                snapshot
                    .workers
                    .iter()
                    .map(|(status, n)| (vec![("status", status.clone())], *n)),
            ),
        );
        registry.register(
            "rbee_worker_slots",
            "Requests the schedulable workers generate at once, by model",
            gauges(
                snapshot
                    .slots
                    .iter()
                    .map(|(model, (total, _))| (vec![("model", model.clone())], *total)),
            ),
        );
        registry.register(
            "rbee_worker_slots_busy",
            "Slots serving a request, as the workers' last heartbeats said, by model",
            gauges(
                snapshot
                    .slots
                    .iter()
                    .map(|(model, (_, busy))| (vec![("model", model.clone())], *busy)),
            ),
        );
        registry.register(
            "rbee_hives",
            "Hives in the inventory",
            gauge(snapshot.hives_total),
        );
        registry.register(
            "rbee_hives_reachable",
            "Hives marked online by their last operation",
            gauge(snapshot.hives_reachable),
        );
        registry.register(
            "rbee_hive_ssh_healthy",
            "1 while a hive's SSH commands fare well, 0 after failures in a row (ssh_unhealthy_after)",
            gauges(snapshot.hive_ssh.iter().filter_map(|(hive, healthy, _)| {
                healthy.map(|h| (vec![("hive", hive.clone())], u64::from(h)))
            })),
        );
        let heard: Family<Vec<(&'static str, String)>, Gauge<f64, std::sync::atomic::AtomicU64>> =
            Family::default();
        for (worker, ms) in &snapshot.worker_heard_ms {
            heard
                .get_or_create(&vec![("worker_id", worker.clone())])
                .set(*ms as f64 / 1000.0);
        }
        registry.register_with_unit(
            "rbee_worker_heartbeat_age",
            "Time since each worker's last heartbeat reached the queen",
            Unit::Seconds,
            heard,
        );
        registry.register(
            "rbee_hive_ssh_consecutive_failures",
            "SSH commands to a hive that failed since its last success",
            gauges(
                snapshot.hive_ssh.iter().map(|(hive, _, failures)| {
                    (vec![("hive", hive.clone())], u64::from(*failures))
                }),
            ),
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &registry);
        text
    }
}

type Count = Gauge<u64, std::sync::atomic::AtomicU64>;

fn gauge(value: u64) -> Count {
    let gauge = Count::default();
    gauge.set(value);
    gauge
}

/// One gauge per label set.
fn gauges(
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Family<Vec<(&'static str, String)>, Count> {
    let family: Family<_, Count> = Family::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    family
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
        assert!(
            text.contains("rbee_worker_heartbeat_age_seconds{worker_id=\"w1\"} 1.5"),
            "{text}"
        );
    }

    /// Every family keeps the name, type and help scrapers and dashboards know it by.
    /// (A family with no samples yet is left out, as Prometheus' own clients do.)
    #[test]
    fn every_family_keeps_its_name_type_and_help() {
        let metrics = Metrics::default();
        metrics.job_finished("infer", "done");
        metrics.inference_finished("m", "ok");
        metrics.inference_timing("m", Duration::from_millis(30), 5, 12.0);
        metrics.ssh_operation("version", "ssh", Duration::from_millis(3));
        let text = metrics.render(&Snapshot {
            workers: BTreeMap::from([("ready".to_owned(), 1)]),
            slots: BTreeMap::from([("m".to_owned(), (4, 1))]),
            hives_total: 1,
            hives_reachable: 1,
            hive_ssh: vec![("a".to_owned(), Some(true), 0)],
            worker_heard_ms: vec![("w1".to_owned(), 10)],
            jobs_running: 0,
        });
        let families = [
            ("rbee_jobs_total", "counter"),
            ("rbee_jobs_running", "gauge"),
            ("rbee_inference_requests_total", "counter"),
            ("rbee_tokens_generated_total", "counter"),
            ("rbee_time_to_first_token_seconds", "histogram"),
            ("rbee_tokens_per_second", "histogram"),
            ("rbee_ssh_operation_seconds", "histogram"),
            ("rbee_workers", "gauge"),
            ("rbee_worker_slots", "gauge"),
            ("rbee_worker_slots_busy", "gauge"),
            ("rbee_hives", "gauge"),
            ("rbee_hives_reachable", "gauge"),
            ("rbee_hive_ssh_healthy", "gauge"),
            ("rbee_worker_heartbeat_age_seconds", "gauge"),
            ("rbee_hive_ssh_consecutive_failures", "gauge"),
        ];
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let expected: Vec<String> = families.iter().map(|(n, t)| format!("{n} {t}")).collect();
        assert_eq!(types, expected, "{text}");
        for (name, _) in families {
            let help = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
                .unwrap_or_else(|| panic!("no help for {name}: {text}"));
            assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
        }
        assert!(text.contains("rbee_jobs_running 0"), "{text}");
    }
}
