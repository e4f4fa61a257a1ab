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

/// Asks which of `choices` is meant (`what` names them, e.g. "model"); without a
/// terminal the keeper fails listing them and naming `flag`, rather than guess or hang.
pub fn choose(what: &str, choices: &[String], flag: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "several {what}s would do: {}\nhint: stdin is not a terminal, so nobody can choose; pass {flag}",
            choices.join(", ")
        );
    }
    let index = dialoguer::Select::new()
        .with_prompt(format!("Which {what}?"))
        .items(choices)
        .default(0)
        .interact()?;
    Ok(choices[index].clone())
}
