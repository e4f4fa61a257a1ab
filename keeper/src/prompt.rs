//! Confirmation prompts that never wait on a terminal that is not there.

use std::io::IsTerminal;

use anyhow::bail;

/// Asks `question`; `--yes` answers it. Without a terminal on stdin the keeper fails
/// and names the flag to pass rather than hang.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "{question}\nhint: stdin is not a terminal, so nobody can answer; pass --yes to proceed"
        );
    }
    Ok(dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?)
}
