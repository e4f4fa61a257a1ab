//! How handlers tell their caller what happens: narrations and the result, each tagged
//! with the hive the agent speaks for.

use rbee_protocol::{JobEvent, Level, Narration, OperationResult, Progress};

/// The actor named in every narration the agent writes.
pub const ACTOR: &str = "rbee-hive";

pub struct Reporter<'a> {
    hive: Option<String>,
    out: &'a mut dyn FnMut(JobEvent),
}

impl<'a> Reporter<'a> {
    pub fn new(hive: Option<String>, out: &'a mut dyn FnMut(JobEvent)) -> Self {
        Reporter { hive, out }
    }

    pub fn narrate(&mut self, level: Level, action: &str, human: impl Into<String>) {
        let event = JobEvent::Narration(Narration {
            actor: ACTOR.to_owned(),
            action: action.to_owned(),
            target: self.hive.clone().unwrap_or_default(),
            human: human.into(),
            level,
            hive: self.hive.clone(),
        });
        (self.out)(event);
    }

    /// Sends a progress event of long work (a transfer).
    pub fn progress(&mut self, mut progress: Progress) {
        progress.hive = self.hive.clone();
        (self.out)(JobEvent::Progress(progress));
    }

    /// Sends the operation's structured answer.
    pub fn result(&mut self, result: OperationResult) {
        (self.out)(JobEvent::Result {
            hive: self.hive.clone(),
            result,
        });
    }
}
