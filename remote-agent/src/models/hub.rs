//! Downloads from the Hugging Face hub (or a mirror in its URL layout): picks a GGUF
//! file when none is named, resumes a partial file with an HTTP Range request, checks
//! the sha256 the hub announces, renames atomically.
//!
//! The hub's layout, as `huggingface_hub` and hf-hub use it: the file list is
//! `GET {endpoint}/api/models/{repo}` (`siblings[].rfilename`); a file is
//! `{endpoint}/{repo}/resolve/{revision}/{file}`, whose answer (before any redirect to
//! a CDN) carries `X-Linked-Etag` (the sha256 of an LFS file), `X-Linked-Size` and
//! `X-Repo-Commit`. The download itself is done here rather than by hf-hub's sync API,
//! which neither resumes a partial file nor checks the sha256.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use rbee_protocol::Level;
use rbee_protocol::models::{HubAccess, ModelTransfer};
use rbee_protocol::validate;
use sha2::{Digest, Sha256};

use super::error::ModelError;
use super::transfer::{self, FileLock, HashingWriter, Meter};
use crate::cancel::CancelFlag;
use crate::error::AgentError;
use crate::report::Reporter;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const REVISION: &str = "main";
/// Tries per download run; each one after the first resumes with a Range request.
const ATTEMPTS: u32 = 3;

/// Quantizations in the order a GGUF file is picked when none is named: the usual
/// balance of size and quality first.
const PREFERENCE: [&str; 13] = [
    "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q4_0", "Q4_1", "Q6_K", "Q8_0", "Q3_K_M", "Q3_K_L",
    "Q2_K", "F16", "BF16",
];

/// `org/repo` or `org/repo:file.gguf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpec {
    pub repo: String,
    pub file: Option<String>,
}

impl HubSpec {
    pub fn parse(spec: &str) -> Result<HubSpec, ModelError> {
        let invalid = |reason| ModelError::InvalidSpec {
            spec: spec.to_owned(),
            reason,
        };
        if !validate::is_valid_model_id(spec) {
            return Err(invalid(
                "use letters, digits, `-`, `_`, `.` in `org/repo[:file.gguf]`",
            ));
        }
        let (repo, file) = match spec.split_once(':') {
            Some((repo, file)) => (repo, Some(file.to_owned())),
            None => (spec, None),
        };
        if repo.split('/').count() != 2 {
            return Err(invalid("a hub repository is `org/repo`"));
        }
        // Names starting with `.` are the catalog's own (partial files, locks), and
        // `.` alone would fold a directory level away.
        let hidden = repo
            .split('/')
            .chain(file.iter().flat_map(|f| f.split('/')))
            .any(|part| part.starts_with('.'));
        if hidden {
            return Err(invalid("no part of a model id may start with `.`"));
        }
        if file
            .as_deref()
            .is_some_and(|f| !f.to_ascii_lowercase().ends_with(".gguf"))
        {
            return Err(invalid(
                "rbee runs GGUF models: the file must end in `.gguf`",
            ));
        }
        Ok(HubSpec {
            repo: repo.to_owned(),
            file,
        })
    }
}

/// The GGUF file to download from a repository's file list, and why: the first
/// quantization in [`PREFERENCE`] that a single-file GGUF has, else the first GGUF.
pub fn pick_gguf(files: &[String]) -> Option<(String, String)> {
    let mut ggufs: Vec<&String> = files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        // Split models (`-00001-of-00003.gguf`) need every part; rbee loads one file.
        .filter(|f| !f.contains("-of-"))
        .collect();
    ggufs.sort();
    for quant in PREFERENCE {
        if let Some(file) = ggufs
            .iter()
            .find(|f| f.to_ascii_uppercase().contains(quant))
        {
            return Some((
                (*file).clone(),
                format!(
                    "picked {file} ({quant}, the first of the usual preference {} the repository has)",
                    PREFERENCE[..3].join(" > ")
                ),
            ));
        }
    }
    ggufs.first().map(|f| {
        (
            (*f).clone(),
            format!("picked {f}, the first GGUF file (no usual quantization in its name)"),
        )
    })
}

/// Endpoint and token: what the queen sent, else the agent's environment, else the hub.
struct Hub {
    endpoint: String,
    token: Option<String>,
    http: ureq::Agent,
}

impl Hub {
    fn new(access: &HubAccess) -> Hub {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = access
            .endpoint
            .clone()
            .or_else(|| from_env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails and is resumed, rather than hanging forever.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(format!("rbee-hive/{}", rbee_protocol::VERSION))
            .build();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token: access.token.clone().or_else(|| from_env("HF_TOKEN")),
            http: config.into(),
        }
    }

    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let request = self.http.get(url);
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn call(
        &self,
        url: &str,
        request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<ureq::http::Response<ureq::Body>, ModelError> {
        request.call().map_err(|source| ModelError::Hub {
            url: url.to_owned(),
            source: Box::new(source),
        })
    }

    /// The file names of a repository at the default revision.
    fn files(&self, repo: &str) -> Result<Vec<String>, ModelError> {
        let url = format!("{}/api/models/{repo}", self.endpoint);
        let mut response = self.call(&url, self.get(&url))?;
        if !response.status().is_success() {
            return Err(ModelError::HubStatus {
                url,
                status: response.status().as_u16(),
            });
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ModelError::HubAnswer {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::HubAnswer {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let siblings = body["siblings"]
            .as_array()
            .ok_or_else(|| ModelError::HubAnswer {
                url: url.clone(),
                reason: "no `siblings` list".to_owned(),
            })?;
        Ok(siblings
            .iter()
            .filter_map(|s| s["rfilename"].as_str().map(str::to_owned))
            .collect())
    }

    /// What the hub announces for a file: size, sha256 (LFS files), commit.
    fn announce(&self, repo: &str, file: &str) -> Result<Announced, ModelError> {
        let url = self.file_url(repo, file);
        let mut request = self.http.head(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        // The hub's own answer holds the linked headers; a CDN behind a redirect does not.
        let request = request.config().max_redirects(0).build();
        let response = request.call().map_err(|source| ModelError::Hub {
            url: url.clone(),
            source: Box::new(source),
        })?;
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return Err(ModelError::HubStatus {
                url,
                status: status.as_u16(),
            });
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header("x-linked-etag").or_else(|| header("etag"));
        let sha256 = etag
            .map(|e| {
                e.trim_start_matches("W/")
                    .trim_matches('"')
                    .to_ascii_lowercase()
            })
            .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
        let size = header("x-linked-size")
            .or_else(|| {
                status
                    .is_success()
                    .then(|| header("content-length"))
                    .flatten()
            })
            .and_then(|v| v.parse().ok());
        Ok(Announced {
            size,
            sha256,
            commit: header("x-repo-commit"),
        })
    }

    fn file_url(&self, repo: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{REVISION}/{file}", self.endpoint)
    }
}

struct Announced {
    size: Option<u64>,
    sha256: Option<String>,
    commit: Option<String>,
}

/// Downloads `spec` into the hive's catalog; `changed` is false when it was there.
pub(crate) fn download(
    install_dir: &Path,
    spec: &str,
    access: &HubAccess,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<ModelTransfer, AgentError> {
    let spec = HubSpec::parse(spec)?;
    let hub = Hub::new(access);
    let file = match &spec.file {
        Some(file) => file.clone(),
        None => {
            let files = hub.files(&spec.repo)?;
            let (file, why) = pick_gguf(&files).ok_or_else(|| ModelError::NoGguf {
                repo: spec.repo.clone(),
                files: files.clone(),
            })?;
            report.narrate(
                Level::Info,
                "model_download",
                format!("{}: {why}", spec.repo),
            );
            file
        }
    };
    let id = format!("{}:{file}", spec.repo);
    let target = super::models_dir(install_dir).join(&spec.repo).join(&file);
    let label = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());

    let _lock = FileLock::acquire(&target, cancel, || {
        report.narrate(
            Level::Info,
            "model_download",
            format!("another transfer of {id} runs on this hive; waiting for it"),
        );
    })?;
    if target.is_file() {
        report.narrate(
            Level::Info,
            "model_download",
            format!("{id} is already here; nothing downloaded"),
        );
        return Ok(ModelTransfer {
            model: super::entry(id, file, &target),
            changed: false,
            sha256: None,
        });
    }

    let announced = hub.announce(&spec.repo, &file)?;
    let partial = transfer::partial_path(&target, announced.sha256.as_deref());
    transfer::remove_other_partials(&target, &partial);
    report.narrate(
        Level::Info,
        "model_download",
        format!(
            "downloading {id} ({}) from {}{}",
            announced
                .size
                .map_or("size unknown".to_owned(), |s| format!("{s} bytes")),
            hub.endpoint,
            announced
                .commit
                .as_deref()
                .map_or(String::new(), |c| format!(
                    " at commit {}",
                    &c[..c.len().min(12)]
                ))
        ),
    );
    if announced.sha256.is_none() {
        report.narrate(
            Level::Warn,
            "model_download",
            format!("the hub announces no sha256 for {file}: only its size can be checked"),
        );
    }
    let url = hub.file_url(&spec.repo, &file);
    let sha256 = fetch(&hub, &url, &label, &partial, announced.size, report, cancel)?;
    transfer::finish(
        &partial,
        &target,
        &label,
        announced.size,
        announced.sha256.as_deref(),
        &sha256,
    )?;
    report.narrate(
        Level::Info,
        "model_download",
        format!(
            "{id} downloaded{}",
            if announced.sha256.is_some() {
                " and its sha256 verified"
            } else {
                ""
            }
        ),
    );
    Ok(ModelTransfer {
        model: super::entry(id, file, &target),
        changed: true,
        sha256: announced.sha256,
    })
}

/// Fills `partial` from `url`, resuming what it holds with Range requests, up to
/// [`ATTEMPTS`] times; returns the sha256 of the whole file.
fn fetch(
    hub: &Hub,
    url: &str,
    label: &str,
    partial: &Path,
    size: Option<u64>,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<String, AgentError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .map_err(ModelError::io("create", partial))?;
    let mut offset = file
        .metadata()
        .map_err(ModelError::io("read", partial))?
        .len();
    if size.is_some_and(|s| offset > s) {
        offset = 0;
        file.set_len(0)
            .map_err(ModelError::io("truncate", partial))?;
    }
    let mut hasher = Sha256::new();
    if offset > 0 {
        transfer::hash_prefix(partial, offset, &mut hasher)?;
        report.narrate(
            Level::Info,
            "model_download",
            format!("resuming {label} at byte {offset} with a Range request"),
        );
    }
    let mut meter = Meter::new(label, size);
    let mut attempt = 0;
    loop {
        cancel.check()?;
        if size == Some(offset) {
            break;
        }
        attempt += 1;
        let mut request = hub.get(url);
        if offset > 0 {
            request = request.header("Range", format!("bytes={offset}-"));
        }
        let mut response = hub.call(url, request)?;
        let status = response.status().as_u16();
        match status {
            206 if content_range_start(&response) == Some(offset) => {}
            // The server ignored the Range (or there was none): start again from zero.
            200 => {
                if offset > 0 {
                    report.narrate(
                        Level::Info,
                        "model_download",
                        "the server does not resume; starting from the first byte",
                    );
                }
                offset = 0;
                hasher = Sha256::new();
                file.set_len(0)
                    .map_err(ModelError::io("truncate", partial))?;
            }
            416 if offset > 0 => {
                // The partial file is longer than the file: it belongs to other
                // content. Start over.
                offset = 0;
                hasher = Sha256::new();
                file.set_len(0)
                    .map_err(ModelError::io("truncate", partial))?;
                continue;
            }
            206 => {
                return Err(ModelError::HubAnswer {
                    url: url.to_owned(),
                    reason: format!("asked for bytes from {offset}, got another range"),
                }
                .into());
            }
            _ => {
                return Err(ModelError::HubStatus {
                    url: url.to_owned(),
                    status,
                }
                .into());
            }
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(ModelError::io("seek", partial))?;
        let mut body = response.body_mut().as_reader();
        let mut writer = HashingWriter {
            file: &mut file,
            hasher: &mut hasher,
        };
        match copy(
            &mut body,
            &mut writer,
            &mut offset,
            &mut meter,
            report,
            cancel,
        ) {
            Ok(()) => {
                if size.is_none_or(|s| s == offset) {
                    break;
                }
                // The body ended early without an error: resume like a broken one.
                if attempt >= ATTEMPTS {
                    return Err(interrupted(
                        label,
                        attempt,
                        offset,
                        size,
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
            }
            Err(CopyError::Cancelled) => return Err(AgentError::Cancelled),
            Err(CopyError::Write(e)) => {
                return Err(transfer::write_failed(partial, label, offset, size, e).into());
            }
            Err(CopyError::Read(e)) => {
                if attempt >= ATTEMPTS {
                    return Err(interrupted(label, attempt, offset, size, e));
                }
                report.narrate(
                    Level::Warn,
                    "model_download",
                    format!("the transfer broke off at byte {offset} ({e}); resuming with a Range request"),
                );
                std::thread::sleep(Duration::from_millis(300 * u64::from(attempt)));
            }
        }
    }
    file.flush()
        .map_err(|e| transfer::write_failed(partial, label, offset, size, e))?;
    Ok(hex::encode(hasher.finalize()))
}

fn interrupted(
    label: &str,
    attempts: u32,
    received: u64,
    size: Option<u64>,
    source: io::Error,
) -> AgentError {
    ModelError::Interrupted {
        file: label.to_owned(),
        attempts,
        received,
        expected: size.map_or("an unknown number of".to_owned(), |s| s.to_string()),
        source,
    }
    .into()
}

/// The first byte of a 206 answer's `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Cancelled,
}

/// Copies `body` to `out`, advancing `offset` and reporting progress.
fn copy(
    body: &mut dyn Read,
    out: &mut dyn Write,
    offset: &mut u64,
    meter: &mut Meter,
    report: &mut Reporter<'_>,
    cancel: &CancelFlag,
) -> Result<(), CopyError> {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        if cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        let n = match body.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        *offset += n as u64;
        if let Some(progress) = meter.update(*offset) {
            report.progress(progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_repository_and_maybe_a_gguf_file() {
        assert_eq!(
            HubSpec::parse("org/repo-GGUF:m.Q4_K_M.gguf").ok(),
            Some(HubSpec {
                repo: "org/repo-GGUF".to_owned(),
                file: Some("m.Q4_K_M.gguf".to_owned())
            })
        );
        assert_eq!(HubSpec::parse("org/repo").ok().map(|s| s.file), Some(None));
        for bad in [
            "repo",
            "org/repo:m.safetensors",
            "local/.:x.gguf",
            "org/repo:.hidden.gguf",
            "org/../x",
            "org/repo:a b.gguf",
            "/etc/passwd",
        ] {
            assert!(HubSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_usual_quantization_is_picked_and_split_files_are_not() {
        let files = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cases: &[(&[&str], Option<&str>)] = &[
            (
                &["README.md", "m.Q8_0.gguf", "m.Q4_K_M.gguf", "m.Q2_K.gguf"],
                Some("m.Q4_K_M.gguf"),
            ),
            (&["m.q5_k_m.gguf", "m.Q8_0.gguf"], Some("m.q5_k_m.gguf")),
            (
                &[
                    "big-Q4_K_M-00001-of-00002.gguf",
                    "big-Q4_K_M-00002-of-00002.gguf",
                    "big-Q8_0.gguf",
                ],
                Some("big-Q8_0.gguf"),
            ),
            (&["b-custom.gguf", "a-custom.gguf"], Some("a-custom.gguf")),
            (&["model.safetensors"], None),
        ];
        for (names, expected) in cases {
            assert_eq!(
                pick_gguf(&files(names)).map(|(f, _)| f).as_deref(),
                *expected,
                "{names:?}"
            );
        }
    }
}
