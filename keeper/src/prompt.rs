//! Questions that never wait on a terminal that is not there: without one on stdin and
//! stdout, a question the keeper would ask is an error naming the flag that answers it.

use std::io::IsTerminal;

use anyhow::bail;

/// Whether someone can answer: stdin and stdout are both a terminal.
pub fn at_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The error for a question nobody can answer: what was wanted and the flag to pass.
pub fn unanswerable(what: &str, flag: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} is needed\nhint: stdin or stdout is not a terminal, so nobody can answer; pass {flag}"
    )
}

/// Asks `question`; `--yes` answers it. Without a terminal the keeper fails and names
/// the flag to pass rather than hang.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !at_terminal() {
        bail!(
            "{question}\nhint: stdin or stdout is not a terminal, so nobody can answer; pass --yes to proceed"
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
    if !at_terminal() {
        bail!(
            "several {what}s would do: {}\nhint: stdin or stdout is not a terminal, so nobody can choose; pass {flag}",
            choices.join(", ")
        );
    }
    Ok(choices[select(&format!("Which {what}?"), choices)?].clone())
}

/// The index of the item picked from `items`; only called at a terminal.
pub fn select(question: &str, items: &[String]) -> anyhow::Result<usize> {
    Ok(dialoguer::Select::new()
        .with_prompt(question)
        .items(items)
        .default(0)
        .interact()?)
}

/// A line of text, `default` offered; `flag` answers it without a terminal.
pub fn text(question: &str, default: Option<&str>, flag: &str) -> anyhow::Result<String> {
    if !at_terminal() {
        return Err(unanswerable(question, flag));
    }
    let mut input = dialoguer::Input::<String>::new().with_prompt(question);
    if let Some(default) = default {
        input = input.default(default.to_owned());
    }
    Ok(input.interact_text()?.trim().to_owned())
}

/// A line of text that may be left empty (`None`), e.g. to keep the inventory's default;
/// `check` refuses a malformed answer and asks again.
pub fn optional_text(
    question: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> anyhow::Result<Option<String>> {
    let answer = dialoguer::Input::<String>::new()
        .with_prompt(question)
        .allow_empty(true)
        .validate_with(|answer: &String| check(answer.trim()))
        .interact_text()?;
    let answer = answer.trim();
    Ok((!answer.is_empty()).then(|| answer.to_owned()))
}

/// Asks whether to go on, yes by default; only called at a terminal.
pub fn proceed(question: &str) -> anyhow::Result<bool> {
    Ok(dialoguer::Confirm::new()
        .with_prompt(question)
        .default(true)
        .interact()?)
}
