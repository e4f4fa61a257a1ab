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
        let parsed = fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))
            .and_then(|text| {
                serde_json::from_str(&text)
                    .map_err(|error| format!("{} is not JSON: {error}", path.display()))
            });
        workers.push(match parsed {
            Ok(state) => KnownWorker {
                id,
                state: Some(state),
                problem: None,
            },
            Err(problem) => KnownWorker {
                id,
                state: None,
                problem: Some(problem),
            },
        });
    }
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_state_files_and_reports_bad_ones_without_failing() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(
            dir.path().join("w-2.json"),
            r#"{"model":"smollm2","port":9001}"#,
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
        assert_eq!(
            workers[1].state,
            Some(serde_json::json!({"model": "smollm2", "port": 9001}))
        );
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
