//! The test seam in place of hives, and the answer type it shares with real agents.

use rbee_hive::AgentCommand;
use rbee_protocol::{ErrorDetail, OperationResult};

/// What the agent answered: its `result`.
pub type AgentAnswer = Result<OperationResult, ErrorDetail>;

/// Answers agent commands in place of hives: the test seam that lets an operation's own
/// logic (fan-out, recap, the typed answers it expects) run without an agent, sshd or
/// files. Set on the queen's state before it serves (`AppState::fake_hives`);
/// a hive it answers `None` for is reached as usual.
pub trait FakeHive: Send + Sync {
    fn answer(&self, hive: &str, command: &AgentCommand) -> Option<AgentAnswer>;
}
