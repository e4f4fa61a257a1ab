//! Model catalog answers (`model list|get|delete|download|push`) as compact tables: the
//! columns an operator compares, sizes and parameter counts in human units.

use rbee_protocol::models::ModelEntry;

/// The table of `entries`; `(no models)` for none.
pub fn render(entries: &[ModelEntry]) -> String {
    if entries.is_empty() {
        return "(no models)".to_owned();
    }
    let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
    crate::table::rows(
        &[
            "id", "size", "arch", "params", "quant", "context", "chat", "engine", "problem",
        ],
        &rows,
    )
}

fn row(entry: &ModelEntry) -> Vec<String> {
    let meta = entry.metadata.as_ref();
    let or_dash = |text: Option<String>| text.unwrap_or_else(|| "-".to_owned());
    vec![
        entry.id.clone(),
        bytes(entry.size),
        or_dash(meta.and_then(|m| m.architecture.clone())),
        or_dash(meta.map(|m| count(m.parameters))),
        or_dash(meta.and_then(|m| m.quantization.clone())),
        or_dash(meta.and_then(|m| m.context_length.map(|c| c.to_string()))),
        or_dash(meta.map(|m| if m.chat_template { "yes" } else { "no" }.to_owned())),
        or_dash(entry.engine.clone()),
        or_dash(entry.problem.clone()),
    ]
}

/// `93.8 MiB`.
pub fn bytes(size: u64) -> String {
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
    use rbee_protocol::models::ModelMetadata;

    #[test]
    fn model_lists_read_as_tables_in_human_units() {
        let entries = [
            ModelEntry {
                id: "local:m.gguf".to_owned(),
                file: "m.gguf".to_owned(),
                path: "/h/models/local/m.gguf".to_owned(),
                size: 98_362_432,
                metadata: Some(ModelMetadata {
                    architecture: Some("llama".to_owned()),
                    parameters: 134_515_008,
                    quantization: Some("Q4_1".to_owned()),
                    context_length: Some(8192),
                    chat_template: true,
                    ..ModelMetadata::default()
                }),
                problem: None,
                engine: Some("cpu-avx2".to_owned()),
            },
            ModelEntry {
                id: "local:bad.gguf".to_owned(),
                file: "bad.gguf".to_owned(),
                path: "/h/models/local/bad.gguf".to_owned(),
                size: 10,
                metadata: None,
                problem: Some("not a readable GGUF file".to_owned()),
                engine: None,
            },
        ];
        let text = render(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "SIZE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "CHAT", "ENGINE", "PROBLEM"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "local:m.gguf",
                "93.8",
                "MiB",
                "llama",
                "134.5M",
                "Q4_1",
                "8192",
                "yes",
                "cpu-avx2",
                "-"
            ]
        );
        assert!(lines[2].contains("not a readable GGUF file"), "{text}");
        assert_eq!(render(&[]), "(no models)");
    }
}
