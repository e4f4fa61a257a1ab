//! A playbook run as Ansible prints one: a line per task and hive as it finishes, and
//! the PLAY RECAP at the end.

use console::style;
use serde_json::Value;

/// `changed: [hive-1] pushed …` for a task's outcome on one hive; `None` for anything
/// else.
pub fn task_line(hive: Option<&str>, value: &Value) -> Option<String> {
    let (task, status) = (value.get("task")?.as_str()?, value.get("status")?.as_str()?);
    let message = value.get("message").and_then(Value::as_str).unwrap_or("");
    let head = format!("{status}: [{}]", hive.unwrap_or("?"));
    let head = match status {
        "ok" => style(head).green(),
        "changed" => style(head).yellow(),
        "skipped" => style(head).cyan(),
        _ => style(head).red().bold(),
    };
    Some(format!("{head} {task}: {message}"))
}

/// The PLAY RECAP table; `None` when `value` is not a playbook's recap.
pub fn recap(value: &Value) -> Option<String> {
    let rows = value.get("play_recap")?.as_array()?;
    let mut out = String::from(if value["check"].as_bool() == Some(true) {
        "PLAY RECAP (check mode: nothing was changed)\n"
    } else {
        "PLAY RECAP\n"
    });
    let width = rows
        .iter()
        .filter_map(|r| r["hive"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    for row in rows {
        let count = |key: &str| row[key].as_u64().unwrap_or(0);
        let hive = row["hive"].as_str().unwrap_or("?");
        let failing = count("failed") + count("unreachable") > 0;
        let name = format!("{hive:width$}");
        let name = if failing {
            style(name).red().bold()
        } else if count("changed") > 0 {
            style(name).yellow()
        } else {
            style(name).green()
        };
        out.push_str(&format!(
            "{name} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={}\n",
            count("ok"),
            count("changed"),
            count("unreachable"),
            count("failed"),
            count("skipped"),
        ));
    }
    if let Some(aborted) = value["aborted"].as_str() {
        out.push_str(&format!("{}\n", style(aborted).red()));
    }
    Some(out.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_lines_and_the_recap() {
        console::set_colors_enabled(false);
        let line = task_line(
            Some("hive-1"),
            &json!({"play": "p", "task": "push", "status": "changed", "message": "pushed m"}),
        );
        assert_eq!(line.as_deref(), Some("changed: [hive-1] push: pushed m"));
        assert_eq!(task_line(None, &json!({"hive": "x"})), None);
        let recap = recap(&json!({
            "play_recap": [
                {"hive": "hive-1", "ok": 5, "changed": 2, "unreachable": 0, "failed": 0, "skipped": 0},
                {"hive": "h2", "ok": 1, "changed": 0, "unreachable": 1, "failed": 0, "skipped": 0},
            ],
            "check": false,
            "aborted": null,
        }))
        .expect("a recap");
        assert!(recap.starts_with("PLAY RECAP\n"), "{recap}");
        assert!(recap.contains("hive-1 : ok=5    changed=2"), "{recap}");
        assert!(
            recap.contains("h2     : ok=1    changed=0    unreachable=1"),
            "{recap}"
        );
    }
}
