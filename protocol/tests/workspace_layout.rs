//! Invariants of the whole workspace's source that a test can check (ARCHITECTURE.md,
//! "Invariants"). They live with rbee-protocol, the crate every other one builds on.
//!
//! No import cycles between the files of a crate: a module may use its ancestors
//! (`super::`), but otherwise the graph of `crate::`/`super::` paths and `mod` items
//! between files has no cycle, so each file can be read knowing only the ones below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 7] = [
    "protocol",
    "config",
    "gguf",
    "queen",
    "remote-agent",
    "worker",
    "keeper",
];

/// A module's path inside its crate: `["operations", "hives"]`; the root is empty.
type Module = Vec<String>;

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text without `//` comments (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifier(rest: &str) -> &str {
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Every module path a file names after `crate::` or `super::` (the segments up to the
/// first that is not a module of the crate), and its `mod` items.
fn targets(module: &Module, text: &str, modules: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut found = BTreeSet::new();
    let text = code(text);
    for start in ["crate::", "super::"] {
        for (at, _) in text.match_indices(start) {
            // A whole word: not `my_crate::`.
            if text[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let base: Module = if start == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            let after = &text[at + start.len()..];
            // `crate::{a, b::c}`: each group member is a path of its own.
            let heads: Vec<&str> = if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(str::trim).collect()
            } else {
                vec![after]
            };
            for mut rest in heads {
                let mut path = base.clone();
                loop {
                    let name = identifier(rest);
                    if name.is_empty() {
                        break;
                    }
                    if name == "super" {
                        path.pop();
                    } else {
                        let mut next = path.clone();
                        next.push(name.to_owned());
                        if !modules.contains(&next) {
                            break;
                        }
                        path = next;
                    }
                    match rest[name.len()..].strip_prefix("::") {
                        Some(more) => rest = more,
                        None => break,
                    }
                }
                found.insert(path);
            }
        }
    }
    for line in text.lines() {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        if let Some(rest) = line.strip_prefix("mod ") {
            let name = identifier(rest);
            if rest[name.len()..].trim_start().starts_with(';') {
                let mut child = module.clone();
                child.push(name.to_owned());
                found.insert(child);
            }
        }
    }
    // Using an ancestor (the root included) is how a child module reads its parent.
    found.retain(|target| {
        target != module && modules.contains(target) && !module.starts_with(target)
    });
    found
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(state: &mut State<'a>, v: &'a Module) {
        let n = state.index.len();
        state.index.insert(v, n);
        state.low.insert(v, n);
        state.stack.push(v);
        state.on_stack.insert(v);
        for w in &state.graph[v] {
            if !state.index.contains_key(w) {
                visit(state, w);
                let low = state.low[v].min(state.low[w]);
                state.low.insert(v, low);
            } else if state.on_stack.contains(w) {
                let low = state.low[v].min(state.index[w]);
                state.low.insert(v, low);
            }
        }
        if state.low[v] == state.index[v] {
            let mut component = Vec::new();
            while let Some(w) = state.stack.pop() {
                state.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn crate_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let sources: BTreeMap<Module, String> = files
        .iter()
        .map(|file| {
            (
                module_of(src, file),
                std::fs::read_to_string(file).expect("read source"),
            )
        })
        .collect();
    let modules: BTreeSet<Module> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, text)| (module.clone(), targets(module, text, &modules)))
        .collect()
}

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for name in CRATES {
        let graph = crate_graph(&root.join(name).join("src"));
        assert!(
            graph.contains_key(&Vec::new()),
            "{name}: no crate root found"
        );
        for cycle in cycles(&graph) {
            let names: Vec<String> = cycle
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        "(root)".to_owned()
                    } else {
                        m.join("::")
                    }
                })
                .collect();
            report.push(format!("{name}: {}", names.join(" ↔ ")));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles between files (move what both sides need into a module below them):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    // The check above cannot pass by finding nothing: a made-up crate with a cycle.
    let modules: BTreeSet<Module> = [vec![], vec!["a".to_owned()], vec!["b".to_owned()]]
        .into_iter()
        .collect();
    let a = targets(&vec!["a".to_owned()], "use crate::b::Thing;", &modules);
    let b = targets(&vec!["b".to_owned()], "use crate::{a::Other, c};", &modules);
    let graph: BTreeMap<Module, BTreeSet<Module>> = [
        (vec![], BTreeSet::new()),
        (vec!["a".to_owned()], a),
        (vec!["b".to_owned()], b),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&graph).len(), 1, "{graph:?}");
}
