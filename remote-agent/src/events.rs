//! The agent's stdout framing: one JSON [`JobEvent`] per line, flushed at once so the
//! queen can forward it while the operation still runs.

use std::io::{self, Write};

use rbee_protocol::JobEvent;

pub struct EventWriter<W: Write> {
    out: W,
}

impl<W: Write> EventWriter<W> {
    pub fn new(out: W) -> Self {
        EventWriter { out }
    }

    /// Writes `event` as one line and flushes. serde_json escapes newlines inside
    /// strings, so an event never spans two lines.
    pub fn write(&mut self, event: &JobEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_parseable_line() {
        let events = [
            JobEvent::narration("rbee-hive", "detect", "hive-1", "two\nlines"),
            JobEvent::Result {
                hive: Some("hive-1".to_owned()),
                result: rbee_protocol::OperationResult::WorkerLogs(
                    rbee_protocol::result::WorkerLogs {
                        worker_id: "w\n1".to_owned(),
                        log: "/l".to_owned(),
                        lines: 0,
                    },
                ),
            },
            JobEvent::Cancelled {
                reason: "stdin closed".to_owned(),
            },
        ];
        let mut writer = EventWriter::new(Vec::new());
        for event in &events {
            writer.write(event).expect("write to a Vec");
        }
        let text = String::from_utf8(writer.out).expect("UTF-8");
        let parsed: Vec<JobEvent> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one event per line"))
            .collect();
        assert_eq!(parsed, events);
    }
}
