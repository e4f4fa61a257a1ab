//! Showing a job's events as they arrive: narration as lines, progress as bars,
//! tokens inline, results as tables; or every event as one JSON line with `--json`.

use std::collections::HashMap;
use std::io::Write;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbee_protocol::{JobEvent, Level, Progress};
use serde_json::Value;

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
            JobEvent::Result { hive, value } => {
                if let Some(line) = crate::playbook_view::task_line(hive.as_deref(), value) {
                    self.line(&line);
                    return;
                }
                self.finish_bars();
                if let Some(recap) = crate::playbook_view::recap(value) {
                    println!("{recap}");
                    return;
                }
                if let Some(hive) = hive {
                    println!("{}", style(format!("[{hive}]")).cyan());
                }
                if let Some(stats) = crate::worker_table::stats_line(value) {
                    eprintln!("{}", style(stats).dim());
                    return;
                }
                let text = crate::model_table::render(value)
                    .or_else(|| crate::worker_table::render(value))
                    .unwrap_or_else(|| format_value(value));
                println!("{text}");
            }
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

/// Arrays of objects become tables; other values are pretty JSON.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => table(rows),
        Value::Array(rows) if rows.is_empty() => "(none)".to_owned(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A row's cells by column name, with its nested objects' fields lifted into it at
/// their parent's place (a model's `metadata` becomes columns of its own); a lifted
/// name that is taken keeps its parent as a prefix.
fn flatten(row: &Value) -> Vec<(String, Value)> {
    let mut flat = Vec::new();
    let Value::Object(map) = row else {
        return flat;
    };
    for (key, value) in map {
        match value {
            Value::Object(inner) => {
                for (inner_key, inner_value) in inner {
                    let name = if map.contains_key(inner_key) {
                        format!("{key}.{inner_key}")
                    } else {
                        inner_key.clone()
                    };
                    flat.push((name, inner_value.clone()));
                }
            }
            other => flat.push((key.clone(), other.clone())),
        }
    }
    flat
}

fn table(rows: &[Value]) -> String {
    let rows: Vec<Vec<(String, Value)>> = rows.iter().map(flatten).collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (key, _) in row {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    // What names a row comes first.
    if let Some(at) = columns.iter().position(|c| c == "id") {
        let id = columns.remove(at);
        columns.insert(0, id);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(key, _)| key == c)
                        .map_or_else(|| "-".to_owned(), |(_, value)| cell(value))
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |items: Vec<String>| {
        items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![render(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(render));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_of_objects_are_tables() {
        let text = format_value(&json!([
            {"alias": "gpu-a", "groups": ["gpu", "x"], "port": 22},
            {"alias": "localhost", "port": null}
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ALIAS      GROUPS  PORT");
        assert_eq!(lines[1], "gpu-a      gpu,x   22");
        assert_eq!(lines[2], "localhost  -       -");
    }

    #[test]
    fn nested_objects_become_columns_of_their_own() {
        let text = format_value(&json!([
            {"id": "local:m.gguf", "size": 7, "metadata": {"architecture": "llama", "size": 1}},
            {"id": "org/r:x.gguf", "size": 9, "problem": "not a GGUF file"}
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID            ARCHITECTURE  METADATA.SIZE  SIZE  PROBLEM"
        );
        assert_eq!(
            lines[1],
            "local:m.gguf  llama         1              7     -"
        );
        assert_eq!(
            lines[2],
            "org/r:x.gguf  -             -              9     not a GGUF file"
        );
    }

    #[test]
    fn other_values_are_json() {
        assert_eq!(format_value(&json!([])), "(none)");
        assert!(format_value(&json!({"a": 1})).contains("\"a\": 1"));
    }
}
