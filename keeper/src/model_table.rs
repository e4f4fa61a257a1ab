//! Model catalog answers (`model list|get|delete|download|push`) as compact tables: the
//! columns an operator compares, sizes and parameter counts in human units.

use rbee_protocol::models::{ModelEntry, ModelTransfer};
use serde_json::Value;

/// The table for a value that is a model entry, a list of them, or a transfer; `None`
/// for anything else.
pub fn render(value: &Value) -> Option<String> {
    let entries: Vec<ModelEntry> = if let Ok(list) = serde_json::from_value(value.clone()) {
        list
    } else if let Ok(one) = serde_json::from_value::<ModelEntry>(value.clone()) {
        vec![one]
    } else if let Ok(transfer) = serde_json::from_value::<ModelTransfer>(value.clone()) {
        vec![transfer.model]
    } else {
        return None;
    };
    if entries.is_empty() {
        return Some("(no models)".to_owned());
    }
    let rows: Vec<Value> = entries.iter().map(row).collect();
    Some(crate::render::format_value(&Value::Array(rows)))
}

fn row(entry: &ModelEntry) -> Value {
    let meta = entry.metadata.as_ref();
    let or_dash = |text: Option<String>| text.unwrap_or_else(|| "-".to_owned());
    serde_json::json!({
        "id": entry.id,
        "size": bytes(entry.size),
        "arch": or_dash(meta.and_then(|m| m.architecture.clone())),
        "params": or_dash(meta.map(|m| count(m.parameters))),
        "quant": or_dash(meta.and_then(|m| m.quantization.clone())),
        "context": or_dash(meta.and_then(|m| m.context_length.map(|c| c.to_string()))),
        "chat": or_dash(meta.map(|m| if m.chat_template { "yes" } else { "no" }.to_owned())),
        "problem": entry.problem.clone(),
    })
}

fn bytes(size: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{size} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_lists_read_as_tables_in_human_units_and_other_values_pass() {
        let list = json!([{
            "id": "local:m.gguf", "file": "m.gguf", "path": "/h/models/local/m.gguf",
            "size": 98_362_432u64,
            "metadata": {"architecture": "llama", "parameters": 134_515_008u64,
                         "quantization": "Q4_1", "context_length": 8192, "chat_template": true}
        }, {
            "id": "local:bad.gguf", "file": "bad.gguf", "path": "/h/models/local/bad.gguf",
            "size": 10, "problem": "not a readable GGUF file"
        }]);
        let text = render(&list).expect("a model table");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "ARCH", "CHAT", "CONTEXT", "PARAMS", "PROBLEM", "QUANT", "SIZE"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "local:m.gguf",
                "llama",
                "yes",
                "8192",
                "134.5M",
                "-",
                "Q4_1",
                "93.8",
                "MiB"
            ]
        );
        assert!(lines[2].contains("not a readable GGUF file"), "{text}");
        assert_eq!(render(&json!([])), Some("(no models)".to_owned()));
        assert_eq!(render(&json!([{"hive": "h", "status": "ok"}])), None);
        assert_eq!(render(&json!({"version": "1"})), None);
    }
}
