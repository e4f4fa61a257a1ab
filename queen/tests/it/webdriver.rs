//! A headless Chromium driven over W3C WebDriver (chromedriver, plain HTTP and JSON),
//! for the dashboard's end-to-end test. The browser and its driver are killed when the
//! [`Browser`] is dropped, however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    /// The driver's and the browser's `TMPDIR` (Chromium's profile and scoped
    /// directories), removed once both are killed.
    _tmp: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, which holds the browser it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> PathBuf {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let hint =
        "install Debian's chromium and chromium-driver: scripts/install-deps.sh (as root) does";
    assert!(Path::new(CHROMIUM).is_file(), "{CHROMIUM} missing: {hint}");
    found.unwrap_or_else(|| panic!("chromedriver missing: {hint}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let tmp = tempfile::tempdir().expect("the browser's temporary directory");
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            http,
            session: String::new(),
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready
                && let Ok(body) = body.await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The sandbox needs user namespaces, which containers and root lack; the page
        // under test is the queen's own.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser
            .call("POST", &format!("{base}/session"), Some(capabilities))
            .await;
        let id = created["sessionId"].as_str().expect("session id");
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn call(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let request = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let response = request.send().await.expect("webdriver request");
        let status = response.status();
        let answer: Value = response.json().await.expect("webdriver json");
        assert!(
            status.is_success(),
            "webdriver {method} {url}: {status} {answer}"
        );
        answer["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().expect("element id").to_owned()
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.session_call("POST", &format!("/element/{id}/click"), None)
            .await;
    }

    /// Replaces the text of an input as a user typing would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.session_call("POST", &format!("/element/{id}/clear"), None)
            .await;
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits until `condition` (a JavaScript expression) holds; on timeout the failure
    /// shows `what` and the page's text.
    pub async fn wait_for(&self, what: &str, condition: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let script = format!("return Boolean({condition});");
        while self.script(&script, json!([])).await != true {
            if Instant::now() > deadline {
                let text = self
                    .script("return document.body.innerText;", json!([]))
                    .await;
                panic!(
                    "{what}: not within {timeout:?}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Emulates a device of `width`×`height` CSS pixels (Chrome DevTools protocol).
    pub async fn emulate(&self, width: u32, height: u32, mobile: bool) {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            })),
        )
        .await;
    }

    /// Saves the viewport as a PNG at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.session_call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 screenshot"))
            .expect("screenshot decodes");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, png).expect("screenshot written");
    }

    /// The browser console's messages of level SEVERE (script errors, refused
    /// resources, content-security-policy violations) since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .session_call("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}
