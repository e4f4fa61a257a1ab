//! Text tables: columns padded to their widest cell, headers in capitals. Typed
//! answers build their rows themselves ([`rows`]); a JSON list the queen serves outside
//! a job (`job list`) becomes one by its keys ([`format_value`]).

use serde_json::Value;

/// `header` over `rows`, each column as wide as its widest cell; `(none)` for no rows.
pub fn rows(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)".to_owned();
    }
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |items: &mut dyn Iterator<Item = String>| {
        items
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![render(&mut header.iter().map(|h| h.to_uppercase()))];
    out.extend(rows.iter().map(|r| render(&mut r.iter().cloned())));
    out.join("\n")
}

/// Arrays of objects become tables; other values are pretty JSON.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
            json_table(rows)
        }
        Value::Array(rows) if rows.is_empty() => "(none)".to_owned(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A row's cells by column name, with its nested objects' fields lifted into it at
/// their parent's place (a model's `metadata` becomes columns of its own); a lifted
/// name that is taken keeps its parent as a prefix.
fn flatten(row: &Value) -> Vec<(String, Value)> {
    let mut flat = Vec::new();
    let Value::Object(map) = row else {
        return flat;
    };
    for (key, value) in map {
        match value {
            Value::Object(inner) => {
                for (inner_key, inner_value) in inner {
                    let name = if map.contains_key(inner_key) {
                        format!("{key}.{inner_key}")
                    } else {
                        inner_key.clone()
                    };
                    flat.push((name, inner_value.clone()));
                }
            }
            other => flat.push((key.clone(), other.clone())),
        }
    }
    flat
}

fn json_table(rows: &[Value]) -> String {
    let rows: Vec<Vec<(String, Value)>> = rows.iter().map(flatten).collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (key, _) in row {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    // What names a row comes first.
    if let Some(at) = columns.iter().position(|c| c == "id") {
        let id = columns.remove(at);
        columns.insert(0, id);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(key, _)| key == c)
                        .map_or_else(|| "-".to_owned(), |(_, value)| cell(value))
                })
                .collect()
        })
        .collect();
    let header: Vec<&str> = columns.iter().map(String::as_str).collect();
    self::rows(&header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_of_objects_are_tables() {
        let text = format_value(&json!([
            {"alias": "gpu-a", "groups": ["gpu", "x"], "port": 22},
            {"alias": "localhost", "port": null}
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ALIAS      GROUPS  PORT");
        assert_eq!(lines[1], "gpu-a      gpu,x   22");
        assert_eq!(lines[2], "localhost  -       -");
    }

    #[test]
    fn nested_objects_become_columns_of_their_own() {
        let text = format_value(&json!([
            {"id": "local:m.gguf", "size": 7, "metadata": {"architecture": "llama", "size": 1}},
            {"id": "org/r:x.gguf", "size": 9, "problem": "not a GGUF file"}
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID            ARCHITECTURE  METADATA.SIZE  SIZE  PROBLEM"
        );
        assert_eq!(
            lines[1],
            "local:m.gguf  llama         1              7     -"
        );
        assert_eq!(
            lines[2],
            "org/r:x.gguf  -             -              9     not a GGUF file"
        );
    }

    #[test]
    fn typed_rows_are_padded_under_their_header() {
        let text = rows(
            &["worker", "model"],
            &[
                vec!["w1".to_owned(), "m.gguf".to_owned()],
                vec!["w-long".to_owned(), "-".to_owned()],
            ],
        );
        assert_eq!(text, "WORKER  MODEL\nw1      m.gguf\nw-long  -");
        assert_eq!(rows(&["a"], &[]), "(none)");
    }

    #[test]
    fn other_values_are_json() {
        assert_eq!(format_value(&json!([])), "(none)");
        assert!(format_value(&json!({"a": 1})).contains("\"a\": 1"));
    }
}
