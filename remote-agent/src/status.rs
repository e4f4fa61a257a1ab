//! The agent's `status`: version, capabilities, install directory, and the workers it
//! has state files for under `<install_dir>/workers/`.

use std::fs;
use std::io;
use std::path::Path;

use rbee_protocol::agent::KnownWorker;

use crate::error::AgentError;

/// Lists `<workers_dir>/*.json`, sorted by id. A missing directory means no workers;
/// a file that cannot be read or parsed is listed with its problem rather than
/// failing the whole status, so one bad file never hides the other workers.
pub fn known_workers(workers_dir: &Path) -> Result<Vec<KnownWorker>, AgentError> {
    let entries = match fs::read_dir(workers_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AgentError::ListWorkers {
                path: workers_dir.to_path_buf(),
                source,
            });
        }
    };
    let mut workers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| AgentError::ListWorkers {
            path: workers_dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let Some(id) = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
        else {
            continue;
        };
        workers.push(match crate::worker_state::read_record(&path) {
            Ok(Some(record)) => KnownWorker {
                id,
                state: Some(record),
                problem: None,
            },
            // Removed since it was listed: the worker was just stopped.
            Ok(None) => continue,
            Err(error) => KnownWorker {
                id,
                state: None,
                problem: Some(with_causes(&error)),
            },
        });
    }
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}

/// The error and each of its causes, as one line.
fn with_causes(error: &AgentError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_state_files_and_reports_bad_ones_without_failing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let record = rbee_protocol::agent::WorkerRecord {
            worker_id: "w-2".to_owned(),
            pid: 4242,
            model: "smollm2".to_owned(),
            model_path: "/h/models/local/smollm2.gguf".to_owned(),
            device: "cpu".to_owned(),
            port: 9001,
            url: "http://127.0.0.1:9001".to_owned(),
            log: "/h/logs/w-2.log".to_owned(),
            queen_url: "http://127.0.0.1:8500".to_owned(),
            started_unix_s: 1,
            memory_bytes: 0,
        };
        fs::write(
            dir.path().join("w-2.json"),
            serde_json::to_string(&record).expect("json"),
        )
        .expect("write");
        fs::write(dir.path().join("w-1.json"), "{not json").expect("write");
        fs::write(dir.path().join("w-3.log"), "ignored").expect("write");

        let workers = known_workers(dir.path()).expect("list");
        let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["w-1", "w-2"]);
        assert!(
            workers[0].state.is_none()
                && workers[0]
                    .problem
                    .as_deref()
                    .is_some_and(|p| p.contains("w-1.json"))
        );
        assert_eq!(workers[1].state, Some(record));
    }

    #[test]
    fn a_missing_workers_directory_means_no_workers() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(
            known_workers(&dir.path().join("workers"))
                .expect("list")
                .is_empty()
        );
    }
}
