//! The job registry: every job's events, kept (bounded) so that a subscriber that
//! connects late or reconnects still receives every event from the first.
//!
//! Invariants: a job ends with exactly one terminal event, after which nothing more is
//! recorded; locks are never held across `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;
use rbee_protocol::JobEvent;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Job {
    pub id: String,
    pub operation: &'static str,
    pub created_at: SystemTime,
    log: Mutex<EventLog>,
    /// The sequence number the next event will get; subscribers wait on changes.
    pushed: watch::Sender<u64>,
    cancel: CancellationToken,
    max_events: usize,
    /// The registry's change counter, bumped when this job ends.
    registry_changed: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct EventLog {
    /// Sequence number of `events[0]`; grows as old events are dropped.
    first_seq: u64,
    events: VecDeque<JobEvent>,
    terminal: Option<&'static str>,
    finished_at: Option<Instant>,
    cancel_reason: Option<String>,
}

/// One event with its position in the job's stream (the SSE `id:`).
pub type Sequenced = (Option<u64>, JobEvent);

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job_id: String,
    pub operation: &'static str,
    /// `running`, or the terminal event's name: `done`, `error`, `cancelled`.
    pub state: &'static str,
    pub events: u64,
    pub created_at_unix_ms: u128,
}

fn lock(log: &Mutex<EventLog>) -> MutexGuard<'_, EventLog> {
    // A panic while holding this lock leaves the log consistent (every mutation is a
    // single push or pop), so a poisoned lock is still safe to use.
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Job {
    /// Records an event. Returns false, recording nothing, once the job has ended.
    pub fn emit(&self, event: JobEvent) -> bool {
        let ended = event.is_terminal();
        let next = {
            let mut log = lock(&self.log);
            if log.terminal.is_some() {
                return false;
            }
            if ended {
                log.terminal = Some(event.kind());
                log.finished_at = Some(Instant::now());
            }
            log.events.push_back(event);
            while log.events.len() > self.max_events {
                log.events.pop_front();
                log.first_seq += 1;
            }
            log.first_seq + log.events.len() as u64
        };
        self.pushed.send_replace(next);
        if ended {
            self.registry_changed.send_modify(|n| *n += 1);
        }
        true
    }

    /// Asks the job to stop; its runner records `cancelled` with this reason.
    pub fn cancel(&self, reason: &str) {
        {
            let mut log = lock(&self.log);
            if log.terminal.is_some() {
                return;
            }
            log.cancel_reason.get_or_insert_with(|| reason.to_owned());
        }
        self.cancel.cancel();
    }

    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn cancel_reason(&self) -> String {
        lock(&self.log)
            .cancel_reason
            .clone()
            .unwrap_or_else(|| "cancelled".to_owned())
    }

    pub fn is_finished(&self) -> bool {
        lock(&self.log).terminal.is_some()
    }

    pub fn summary(&self) -> JobSummary {
        let log = lock(&self.log);
        JobSummary {
            job_id: self.id.clone(),
            operation: self.operation,
            state: log.terminal.unwrap_or("running"),
            events: log.first_seq + log.events.len() as u64,
            created_at_unix_ms: self
                .created_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        }
    }

    /// Every event from sequence number `from` on; whether the terminal one is among them.
    fn read_from(&self, from: u64) -> (Vec<Sequenced>, bool) {
        let log = lock(&self.log);
        let mut out = Vec::new();
        if from < log.first_seq {
            out.push((
                None,
                JobEvent::narration(
                    "queen",
                    "events_dropped",
                    &self.id,
                    format!(
                        "{} earlier events of this job were dropped (the queen keeps {})",
                        log.first_seq - from,
                        self.max_events
                    ),
                ),
            ));
        }
        let start = from.max(log.first_seq);
        let skip = (start - log.first_seq) as usize;
        out.extend(
            log.events
                .iter()
                .skip(skip)
                .enumerate()
                .map(|(i, e)| (Some(start + i as u64), e.clone())),
        );
        (out, log.terminal.is_some())
    }

    /// A stream of the job's events from `from` on, ending after the terminal event.
    pub fn subscribe(self: Arc<Self>, from: u64) -> impl Stream<Item = Sequenced> + Send + 'static {
        struct Cursor {
            job: Arc<Job>,
            pushed: watch::Receiver<u64>,
            next: u64,
            pending: VecDeque<Sequenced>,
            finished: bool,
        }
        let pushed = self.pushed.subscribe();
        let cursor = Cursor {
            job: self,
            pushed,
            next: from,
            pending: VecDeque::new(),
            finished: false,
        };
        futures::stream::unfold(cursor, |mut c| async move {
            loop {
                if let Some(item) = c.pending.pop_front() {
                    return Some((item, c));
                }
                if c.finished {
                    return None;
                }
                // Mark the current count seen before reading, so an event pushed after
                // the read always wakes the `changed()` below.
                c.pushed.borrow_and_update();
                let (batch, terminal) = c.job.read_from(c.next);
                if let Some(last) = batch.iter().rev().find_map(|(seq, _)| *seq) {
                    c.next = last + 1;
                }
                c.finished = terminal;
                if batch.is_empty() && !terminal && c.pushed.changed().await.is_err() {
                    return None;
                }
                c.pending.extend(batch);
            }
        })
    }
}

/// Owner of every job. Finished jobs are forgotten `ttl` after they end.
pub struct JobRegistry {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    ttl: Duration,
    max_events: usize,
    /// Bumped when a job starts, ends or is forgotten (not on every event), so the
    /// dashboard's stream pushes the job list without polling.
    changed: Arc<watch::Sender<u64>>,
}

impl JobRegistry {
    pub fn new(ttl: Duration, max_events: usize) -> Self {
        JobRegistry {
            jobs: Mutex::new(HashMap::new()),
            ttl,
            max_events: max_events.max(16),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn create(&self, operation: &'static str) -> Arc<Job> {
        let job = Arc::new(Job {
            id: format!("job-{}", uuid::Uuid::new_v4().simple()),
            operation,
            created_at: SystemTime::now(),
            log: Mutex::new(EventLog::default()),
            pushed: watch::channel(0).0,
            cancel: CancellationToken::new(),
            max_events: self.max_events,
            registry_changed: self.changed.clone(),
        });
        self.jobs().insert(job.id.clone(), job.clone());
        self.changed.send_modify(|n| *n += 1);
        job
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The summaries of the `count` most recently created jobs, newest first.
    pub fn recent(&self, count: usize) -> Vec<JobSummary> {
        let mut jobs = self.list();
        jobs.reverse();
        jobs.truncate(count);
        jobs
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs().get(id).cloned()
    }

    pub fn list(&self) -> Vec<JobSummary> {
        let jobs: Vec<Arc<Job>> = self.jobs().values().cloned().collect();
        let mut out: Vec<JobSummary> = jobs.iter().map(|j| j.summary()).collect();
        out.sort_by_key(|s| s.created_at_unix_ms);
        out
    }

    pub fn cancel_all(&self, reason: &str) {
        let jobs: Vec<Arc<Job>> = self.jobs().values().cloned().collect();
        for job in jobs {
            job.cancel(reason);
        }
    }

    pub fn running(&self) -> usize {
        let jobs: Vec<Arc<Job>> = self.jobs().values().cloned().collect();
        jobs.iter().filter(|j| !j.is_finished()).count()
    }

    /// Forgets jobs that ended more than `ttl` ago.
    pub fn expire(&self) {
        let now = Instant::now();
        let forgotten = {
            let mut jobs = self.jobs();
            let before = jobs.len();
            jobs.retain(|_, job| {
                lock(&job.log)
                    .finished_at
                    .is_none_or(|at| now.duration_since(at) < self.ttl)
            });
            before - jobs.len()
        };
        if forgotten > 0 {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn note(i: u32) -> JobEvent {
        JobEvent::narration("t", "step", "", format!("{i}"))
    }

    #[tokio::test]
    async fn late_subscriber_sees_everything_and_stream_ends_once() {
        let registry = JobRegistry::new(Duration::from_secs(60), 100);
        let job = registry.create("status");
        for i in 0..3 {
            assert!(job.emit(note(i)));
        }
        assert!(job.emit(JobEvent::Done));
        assert!(
            !job.emit(JobEvent::Done),
            "a second terminal event is refused"
        );
        assert!(!job.emit(note(9)), "nothing is recorded after the end");
        let events: Vec<_> = job.clone().subscribe(0).collect().await;
        assert_eq!(events.len(), 4);
        assert_eq!(events[3], (Some(3), JobEvent::Done));
        let resumed: Vec<_> = job.subscribe(2).collect().await;
        assert_eq!(resumed.len(), 2, "resuming from id 2 skips what was seen");
    }

    #[tokio::test]
    async fn live_subscriber_wakes_for_each_event() {
        let registry = JobRegistry::new(Duration::from_secs(60), 100);
        let job = registry.create("status");
        let mut stream = Box::pin(job.clone().subscribe(0));
        let producer = job.clone();
        tokio::spawn(async move {
            for i in 0..5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                producer.emit(note(i));
            }
            producer.emit(JobEvent::Done);
        });
        let mut seen = 0;
        while let Some((_, event)) = stream.next().await {
            seen += 1;
            if event.is_terminal() {
                break;
            }
        }
        assert_eq!(seen, 6);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn bounded_log_says_what_was_dropped() {
        let registry = JobRegistry::new(Duration::from_secs(60), 16);
        let job = registry.create("infer");
        for i in 0..40 {
            job.emit(note(i));
        }
        job.emit(JobEvent::Done);
        let events: Vec<_> = job.subscribe(0).collect().await;
        assert_eq!(events.len(), 17);
        assert!(matches!(&events[0].1, JobEvent::Narration(n) if n.action == "events_dropped"));
        assert_eq!(events.last().map(|e| e.0), Some(Some(40)));
    }

    #[test]
    fn the_registry_announces_starts_and_ends_but_not_every_event() {
        let registry = JobRegistry::new(Duration::from_millis(0), 16);
        let mut changes = registry.subscribe();
        let job = registry.create("infer");
        assert!(
            changes.has_changed().unwrap_or(false),
            "a start is announced"
        );
        changes.borrow_and_update();
        job.emit(note(1));
        assert!(!changes.has_changed().unwrap_or(true), "an event is not");
        job.emit(JobEvent::Done);
        assert!(
            changes.has_changed().unwrap_or(false),
            "an end is announced"
        );
        changes.borrow_and_update();
        registry.expire();
        assert!(
            changes.has_changed().unwrap_or(false),
            "forgetting is announced"
        );
    }

    #[tokio::test]
    async fn finished_jobs_expire_running_ones_stay() {
        let registry = JobRegistry::new(Duration::from_millis(0), 16);
        let done = registry.create("status");
        done.emit(JobEvent::Done);
        let running = registry.create("status");
        registry.expire();
        assert!(registry.get(&done.id).is_none());
        assert!(registry.get(&running.id).is_some());
    }
}
