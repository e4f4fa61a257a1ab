//! A local stand-in for the Hugging Face hub, in its URL layout: the tests cannot reach
//! the hub, and need one that breaks on purpose.
//!
//! Serves `GET /api/models/{repo}` (`siblings`) and `GET`/`HEAD
//! /{repo}/resolve/{revision}/{file}` with the headers hf-hub reads (`X-Linked-Etag`
//! with the sha256, `X-Linked-Size`, `X-Repo-Commit`, `ETag`, `Accept-Ranges`) and
//! `Range: bytes=N-` answered with 206. A file can be told to cut the connection
//! midway for its first GETs, or to serve corrupted bytes under the right sha256.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
pub struct MirrorFile {
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
    /// This many GETs end after `cut_at` bytes, the connection closed.
    pub cuts_left: usize,
    pub cut_at: u64,
    /// Serve the bytes with one flipped, announcing the sha256 of the right ones.
    pub corrupt: bool,
    /// Serve slowly (64 KiB every 20 ms), so a test can act mid-transfer.
    pub slow: bool,
    /// Answer `resolve` with a 302 to `/cdn/…` carrying the linked headers, as the hub
    /// does for LFS files; the bytes come from there, without the sha256 ETag.
    pub redirect: bool,
}

impl MirrorFile {
    pub fn new(bytes: Arc<Vec<u8>>) -> Self {
        let sha256 = hex::encode(Sha256::digest(bytes.as_slice()));
        MirrorFile {
            bytes,
            sha256,
            cuts_left: 0,
            cut_at: 0,
            corrupt: false,
            slow: false,
            redirect: false,
        }
    }
}

/// One request as the mirror saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shelf {
    /// repo → file name → file
    repos: HashMap<String, HashMap<String, MirrorFile>>,
    /// Repositories that answer 401 without this bearer token.
    gated: HashMap<String, String>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct HubMirror {
    pub addr: SocketAddr,
    shelf: Arc<Mutex<Shelf>>,
}

impl HubMirror {
    /// Listens on `bind` (port 0 picks one) until the test's runtime ends.
    pub async fn start(bind: &str) -> HubMirror {
        let listener = TcpListener::bind(bind).await.expect("bind the mirror");
        let mirror = HubMirror {
            addr: listener.local_addr().expect("addr"),
            shelf: Arc::default(),
        };
        let serving = mirror.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mirror = serving.clone();
                tokio::spawn(async move {
                    let _ = mirror.serve(stream).await;
                });
            }
        });
        mirror
    }

    pub fn add(&self, repo: &str, name: &str, file: MirrorFile) {
        self.shelf()
            .repos
            .entry(repo.to_owned())
            .or_default()
            .insert(name.to_owned(), file);
    }

    pub fn gate(&self, repo: &str, token: &str) {
        self.shelf().gated.insert(repo.to_owned(), token.to_owned());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shelf().seen.clone()
    }

    fn shelf(&self) -> std::sync::MutexGuard<'_, Shelf> {
        self.shelf.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut stream = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if stream.read_line(&mut request_line).await? == 0 {
                return Ok(());
            }
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                stream.read_line(&mut line).await?;
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
            let mut words = request_line.split_whitespace();
            let method = words.next().unwrap_or("").to_owned();
            let path = words.next().unwrap_or("").to_owned();
            let seen = Seen {
                method: method.clone(),
                path: path.clone(),
                range: headers.get("range").cloned(),
                authorization: headers.get("authorization").cloned(),
            };
            self.shelf().seen.push(seen.clone());
            if !self.answer(stream.get_mut(), &seen).await? {
                return Ok(());
            }
        }
    }

    /// Writes the answer; false when the connection must close.
    async fn answer(&self, out: &mut TcpStream, request: &Seen) -> std::io::Result<bool> {
        let head_only = request.method == "HEAD";
        let path = request.path.trim_start_matches('/');
        if let Some(repo) = path.strip_prefix("api/models/") {
            let files = self.shelf().repos.get(repo).map(|files| {
                let mut names: Vec<&String> = files.keys().collect();
                names.sort();
                names
                    .into_iter()
                    .map(|n| serde_json::json!({"rfilename": n}))
                    .collect::<Vec<_>>()
            });
            let Some(siblings) = files else {
                return status(out, 404, "Repository not found").await;
            };
            let body =
                serde_json::json!({"id": repo, "sha": COMMIT, "siblings": siblings}).to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            out.write_all(head.as_bytes()).await?;
            out.write_all(body.as_bytes()).await?;
            return Ok(true);
        }
        // {org}/{repo}/resolve/{revision}/{file}
        // {org}/{repo}/resolve/{revision}/{file}, or cdn/{org}/{repo}/{file} where a
        // redirected file's bytes are (as the hub sends LFS files to its CDN).
        let parts: Vec<&str> = path.splitn(5, '/').collect();
        let (repo, file, from_cdn) = match parts.as_slice() {
            [org, name, "resolve", _revision, file] => (format!("{org}/{name}"), *file, false),
            ["cdn", org, name, file] => (format!("{org}/{name}"), *file, true),
            _ => return status(out, 404, "Entry not found").await,
        };
        let gate = self.shelf().gated.get(&repo).cloned();
        if let Some(token) = gate
            && !from_cdn
            && request.authorization.as_deref() != Some(&format!("Bearer {token}"))
        {
            return status(out, 401, "Access to this model is restricted").await;
        }
        let redirect = self
            .shelf()
            .repos
            .get(&repo)
            .and_then(|files| files.get(file))
            .map(|f| (f.redirect && !from_cdn, f.sha256.clone(), f.bytes.len()));
        if let Some((true, sha, total)) = redirect {
            let head = format!(
                "HTTP/1.1 302 Found\r\nLocation: /cdn/{repo}/{file}\r\nContent-Length: 0\r\n\
                 X-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {total}\r\nX-Repo-Commit: {COMMIT}\r\n\r\n"
            );
            out.write_all(head.as_bytes()).await?;
            return Ok(true);
        }
        let found = {
            let mut shelf = self.shelf();
            shelf
                .repos
                .get_mut(&repo)
                .and_then(|files| files.get_mut(file))
                .map(|f| {
                    let cut = !head_only && f.cuts_left > 0;
                    if cut {
                        f.cuts_left -= 1;
                    }
                    (f.clone(), cut)
                })
        };
        let Some((served, cut)) = found else {
            return status(out, 404, "Entry not found").await;
        };
        let total = served.bytes.len() as u64;
        let start = request
            .range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if start >= total && start > 0 {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\n\r\n"
            );
            out.write_all(head.as_bytes()).await?;
            return Ok(true);
        }
        let (code, reason, range) = if start > 0 {
            (
                206,
                "Partial Content",
                format!("Content-Range: bytes {start}-{}/{total}\r\n", total - 1),
            )
        } else {
            (200, "OK", String::new())
        };
        // The hub's own answer names the content; a CDN's ETag is of its own making.
        let tags = if from_cdn {
            "ETag: \"cdn-object-etag\"\r\n".to_owned()
        } else {
            format!(
                "ETag: \"{sha}\"\r\nX-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {total}\r\nX-Repo-Commit: {COMMIT}\r\n",
                sha = served.sha256
            )
        };
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n{range}{tags}\r\n",
            total - start,
        );
        out.write_all(head.as_bytes()).await?;
        if head_only {
            return Ok(true);
        }
        let mut body = served.bytes[start as usize..].to_vec();
        if served.corrupt {
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
        }
        if cut {
            let end = (served.cut_at.saturating_sub(start) as usize).min(body.len());
            out.write_all(&body[..end]).await?;
            out.flush().await?;
            return Ok(false);
        }
        if served.slow {
            for chunk in body.chunks(64 * 1024) {
                out.write_all(chunk).await?;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        } else {
            out.write_all(&body).await?;
        }
        Ok(true)
    }
}

async fn status(out: &mut TcpStream, code: u16, message: &str) -> std::io::Result<bool> {
    let head = format!(
        "HTTP/1.1 {code} {message}\r\nContent-Length: {}\r\nX-Error-Message: {message}\r\n\r\n{message}",
        message.len()
    );
    out.write_all(head.as_bytes()).await?;
    Ok(true)
}
