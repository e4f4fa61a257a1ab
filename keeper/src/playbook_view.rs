//! A playbook run as Ansible prints one: a line per task and hive as it finishes, and
//! the PLAY RECAP at the end.

use console::style;
use rbee_protocol::result::{PlaybookRecap, TaskOutcome, TaskStatus};

/// `changed: [hive-1] push: pushed …` for a task's outcome on one hive.
pub fn task_line(hive: Option<&str>, outcome: &TaskOutcome) -> String {
    let head = format!("{}: [{}]", outcome.status.as_str(), hive.unwrap_or("?"));
    let head = match outcome.status {
        TaskStatus::Ok => style(head).green(),
        TaskStatus::Changed => style(head).yellow(),
        TaskStatus::Skipped => style(head).cyan(),
        TaskStatus::Failed | TaskStatus::Unreachable => style(head).red().bold(),
    };
    format!("{head} {}: {}", outcome.task, outcome.message)
}

/// The PLAY RECAP table.
pub fn recap(recap: &PlaybookRecap) -> String {
    let mut out = String::from(if recap.check {
        "PLAY RECAP (check mode: nothing was changed)\n"
    } else {
        "PLAY RECAP\n"
    });
    let width = recap
        .play_recap
        .iter()
        .map(|r| r.hive.len())
        .max()
        .unwrap_or(0);
    for row in &recap.play_recap {
        let name = format!("{:width$}", row.hive);
        let name = if row.failed + row.unreachable > 0 {
            style(name).red().bold()
        } else if row.changed > 0 {
            style(name).yellow()
        } else {
            style(name).green()
        };
        out.push_str(&format!(
            "{name} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={}\n",
            row.ok, row.changed, row.unreachable, row.failed, row.skipped,
        ));
    }
    if let Some(aborted) = &recap.aborted {
        out.push_str(&format!("{}\n", style(aborted).red()));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_protocol::result::PlayTally;

    #[test]
    fn task_lines_and_the_recap() {
        console::set_colors_enabled(false);
        let line = task_line(
            Some("hive-1"),
            &TaskOutcome {
                play: "p".to_owned(),
                task: "push".to_owned(),
                status: TaskStatus::Changed,
                message: "pushed m".to_owned(),
            },
        );
        assert_eq!(line, "changed: [hive-1] push: pushed m");
        let tally = |hive: &str, ok, changed, unreachable| PlayTally {
            hive: hive.to_owned(),
            ok,
            changed,
            unreachable,
            failed: 0,
            skipped: 0,
        };
        let recap = recap(&PlaybookRecap {
            play_recap: vec![tally("hive-1", 5, 2, 0), tally("h2", 1, 0, 1)],
            check: false,
            aborted: None,
        });
        assert!(recap.starts_with("PLAY RECAP\n"), "{recap}");
        assert!(recap.contains("hive-1 : ok=5    changed=2"), "{recap}");
        assert!(
            recap.contains("h2     : ok=1    changed=0    unreachable=1"),
            "{recap}"
        );
    }
}
