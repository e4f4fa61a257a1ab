//! The queen's HTTP client: submit an operation, then follow its SSE stream as it
//! arrives, reconnecting from the last event id if the connection drops.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use rbee_protocol::sse::SseDecoder;
use rbee_protocol::{ErrorBody, JobEvent, Operation};
use serde::Deserialize;

/// How many times a dropped stream is resumed before giving up.
const RECONNECTS: u32 = 5;

#[derive(Clone)]
pub struct QueenClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Submitted {
    pub job_id: String,
    pub sse_url: String,
}

impl QueenClient {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(QueenClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the queen at {}: {e}\nhint: start it with `rbee-keeper queen start`, \
             or point --queen-url at it",
            self.base
        )
    }

    /// GET a JSON document; `Ok(None)` when nothing listens.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let response = match self
            .request(reqwest::Method::GET, path)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) if e.is_connect() || e.is_timeout() => return Ok(None),
            Err(e) => return Err(self.unreachable(e)),
        };
        Ok(Some(read_json(response).await?))
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        read_json(response).await
    }

    pub async fn submit(&self, operation: &Operation) -> anyhow::Result<Submitted> {
        let value = self
            .post_json("/v1/jobs", &serde_json::to_value(operation)?)
            .await?;
        serde_json::from_value(value).context("the queen's answer to POST /v1/jobs")
    }

    pub async fn cancel(&self, job_id: &str) -> anyhow::Result<()> {
        let response = self
            .request(reqwest::Method::DELETE, &format!("/v1/jobs/{job_id}"))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        read_json(response).await.map(|_| ())
    }

    /// Follows a job's events from the first, calling `on_event` for each as it
    /// arrives; returns the terminal event.
    pub async fn follow(
        &self,
        job_id: &str,
        mut on_event: impl FnMut(&JobEvent),
    ) -> anyhow::Result<JobEvent> {
        let mut last_id: Option<u64> = None;
        let mut failures = 0;
        loop {
            match self.follow_once(job_id, &mut last_id, &mut on_event).await {
                Ok(Some(terminal)) => return Ok(terminal),
                Ok(None) => failures += 1,
                Err(e) if failures < RECONNECTS && e.downcast_ref::<reqwest::Error>().is_some() => {
                    tracing::debug!("job stream interrupted: {e:#}");
                    failures += 1;
                }
                Err(e) => return Err(e),
            }
            if failures > RECONNECTS {
                bail!("the queen closed the stream of {job_id} before the job ended");
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
        }
    }

    async fn follow_once(
        &self,
        job_id: &str,
        last_id: &mut Option<u64>,
        on_event: &mut impl FnMut(&JobEvent),
    ) -> anyhow::Result<Option<JobEvent>> {
        let mut request = self
            .request(reqwest::Method::GET, &format!("/v1/jobs/{job_id}/stream"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            read_json(response).await?;
            bail!("the queen refused the stream of {job_id}");
        }
        let mut decoder = SseDecoder::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            for frame in decoder
                .feed(&chunk?)
                .context("the job stream is not valid SSE")?
            {
                if let Some(id) = frame.id.as_deref().and_then(|id| id.parse().ok()) {
                    *last_id = Some(id);
                }
                let event = JobEvent::from_sse(&frame.event, &frame.data).with_context(|| {
                    format!(
                        "the queen sent an event this keeper cannot read: {}",
                        frame.data
                    )
                })?;
                on_event(&event);
                if event.is_terminal() {
                    return Ok(Some(event));
                }
            }
        }
        Ok(None)
    }
}

/// Reads a JSON body; an error status becomes the queen's error with its hint.
async fn read_json(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let text = response
        .text()
        .await
        .context("reading the queen's answer")?;
    if status.is_success() {
        return serde_json::from_str(&text)
            .with_context(|| format!("the queen's answer is not JSON: {text}"));
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(anyhow!(body.error)),
        Err(_) => Err(anyhow!("the queen answered {status}: {text}")),
    }
}
