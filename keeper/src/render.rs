//! Showing a job's events as they arrive: narration as lines, progress as bars,
//! tokens inline, results matched by kind into sentences and tables; or every event as
//! one JSON line with `--json`.

use std::collections::HashMap;
use std::io::Write;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbee_protocol::{JobEvent, Level, OperationResult, Progress};

pub struct Renderer {
    json: bool,
    bars: MultiProgress,
    progress: HashMap<(Option<String>, String), ProgressBar>,
    /// Whether tokens were printed without a final newline yet.
    mid_line: bool,
}

impl Renderer {
    pub fn new(json: bool) -> Self {
        let bars = MultiProgress::with_draw_target(if json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        Renderer {
            json,
            bars,
            progress: HashMap::new(),
            mid_line: false,
        }
    }

    pub fn event(&mut self, event: &JobEvent) {
        if self.json {
            println!("{}", serde_json::to_string(event).unwrap_or_default());
            return;
        }
        if !matches!(event, JobEvent::Token { .. }) && self.mid_line {
            println!();
            self.mid_line = false;
        }
        match event {
            JobEvent::Narration(n) => {
                let prefix = n
                    .hive
                    .as_deref()
                    .map(|h| format!("[{h}] "))
                    .unwrap_or_default();
                let line = format!("{}{}", style(prefix).cyan(), n.human);
                let line = match n.level {
                    Level::Debug => style(line).dim().to_string(),
                    Level::Info => line,
                    Level::Warn => style(line).yellow().to_string(),
                    Level::Error => style(line).red().to_string(),
                };
                self.line(&line);
            }
            JobEvent::Progress(p) => self.progress(p),
            JobEvent::Token { t, .. } => {
                print!("{t}");
                let _ = std::io::stdout().flush();
                self.mid_line = true;
            }
            JobEvent::Result { hive, result } => self.result(hive.as_deref(), result),
            JobEvent::Done => self.finish_bars(),
            JobEvent::Error(e) => {
                self.finish_bars();
                eprintln!(
                    "{} {} ({})",
                    style("error:").red().bold(),
                    e.message,
                    e.code
                );
                if let Some(hint) = &e.hint {
                    eprintln!("{} {hint}", style("hint:").yellow());
                }
            }
            JobEvent::Cancelled { reason } => {
                self.finish_bars();
                eprintln!("{} {reason}", style("cancelled:").yellow().bold());
            }
        }
    }

    /// A result as text: a hive's answer as a sentence after its name, a list as a
    /// table, an `infer` run's stats as a dim line, a playbook's task as its line.
    fn result(&mut self, hive: Option<&str>, result: &OperationResult) {
        use crate::{cluster_view, model_table, playbook_view, worker_table};
        let text = match result {
            OperationResult::PlaybookTask(outcome) => {
                self.line(&playbook_view::task_line(hive, outcome));
                return;
            }
            OperationResult::Inference(stats) => {
                self.finish_bars();
                eprintln!("{}", style(worker_table::stats_line(stats)).dim());
                return;
            }
            OperationResult::AgentVersion(version) => cluster_view::version(version),
            OperationResult::Capabilities(caps) => cluster_view::capabilities(caps),
            OperationResult::AgentStatus(status) => cluster_view::status(status),
            OperationResult::Binaries(installed) => cluster_view::binaries(installed),
            OperationResult::SpawnedWorker(worker) => worker_table::spawned(worker),
            OperationResult::WorkerStopped(stopped) => format!(
                "worker {} {}",
                stopped.worker_id,
                stopped.outcome.describe()
            ),
            OperationResult::HiveWorkers(workers) => worker_table::render_on_hive(workers),
            OperationResult::WorkerLogs(logs) => format!(
                "{} line(s) of worker {}'s log {}",
                logs.lines, logs.worker_id, logs.log
            ),
            OperationResult::Models(entries) => model_table::render(entries),
            OperationResult::Platform(platform) => platform.to_string(),
            OperationResult::Model(entry) => model_table::render(std::slice::from_ref(entry)),
            OperationResult::ModelTransfer(transfer) => {
                model_table::render(std::slice::from_ref(&transfer.model))
            }
            OperationResult::ModelPresence(presence) => match &presence.model {
                Some(entry) if presence.present => format!("has {}", entry.id),
                _ => "does not have the file".to_owned(),
            },
            OperationResult::ClusterStatus(status) => cluster_view::cluster(status),
            OperationResult::Inventory(hives) => cluster_view::hives(hives),
            OperationResult::HiveProbe(probe) => cluster_view::probe(probe),
            OperationResult::InventoryChange(change) => cluster_view::inventory_change(change),
            OperationResult::Workers(workers) => worker_table::render(workers),
            OperationResult::Worker(worker) => worker_table::render(std::slice::from_ref(worker)),
            OperationResult::Recap(rows) => cluster_view::recap(rows),
            OperationResult::PlaybookRecap(recap) => playbook_view::recap(recap),
        };
        self.finish_bars();
        match hive {
            // A hive's answer reads as one more line about that hive, or its table
            // under its name.
            Some(hive) if !text.contains('\n') => {
                println!("{}{text}", style(format!("[{hive}] ")).cyan());
            }
            Some(hive) => println!("{}\n{text}", style(format!("[{hive}]")).cyan()),
            None => println!("{text}"),
        }
    }

    fn line(&self, line: &str) {
        if self.progress.is_empty() || self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    fn progress(&mut self, p: &Progress) {
        let key = (p.hive.clone(), p.label.clone());
        let bar = self.progress.entry(key).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(p.total.unwrap_or(0)));
            let template = if p.unit == "bytes" {
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else if p.unit == "%" {
                "{prefix} [{bar:30}] {pos}%"
            } else {
                "{prefix} [{bar:30}] {pos}/{len}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            let hive = p
                .hive
                .as_deref()
                .map(|h| format!("[{h}] "))
                .unwrap_or_default();
            bar.set_prefix(format!("{hive}{}", p.label));
            bar
        });
        if let Some(total) = p.total {
            bar.set_length(total);
        }
        bar.set_position(p.current);
    }

    fn finish_bars(&mut self) {
        for (_, bar) in self.progress.drain() {
            bar.finish();
        }
    }
}
