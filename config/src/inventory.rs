//! The inventory: which machines are hives, how to reach them, and their groups.
//!
//! Variables resolve as Ansible's do: host vars over group vars over defaults. Host
//! patterns follow Ansible's too: an alias, a group, a glob, `all`, and the
//! combinations `a:b` (union), `a:&b` (intersection) and `a:!b` (exclusion).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rbee_protocol::validate::is_valid_name;
use serde::Deserialize;

use crate::FileError;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    hives: BTreeMap<String, HiveEntry>,
    #[serde(default)]
    groups: BTreeMap<String, GroupEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Defaults {
    ssh_user: Option<String>,
    ssh_port: Option<u16>,
    identity_file: Option<String>,
    install_dir: String,
    /// rbee's own known-hosts file; the user's `~/.ssh/known_hosts` when unset.
    known_hosts: Option<String>,
    vars: toml::Table,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            ssh_user: None,
            ssh_port: None,
            identity_file: None,
            install_dir: "~/.rbee".to_owned(),
            known_hosts: None,
            vars: toml::Table::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HiveEntry {
    host: String,
    ssh_user: Option<String>,
    ssh_port: Option<u16>,
    identity_file: Option<String>,
    install_dir: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    vars: toml::Table,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    #[serde(default)]
    vars: toml::Table,
    /// Groups whose hives belong to this group too.
    #[serde(default)]
    children: Vec<String>,
    /// Hives listed from the group's side, as Ansible's `hosts:` under a group.
    #[serde(default)]
    hives: Vec<String>,
}

/// One hive with every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Hive {
    pub alias: String,
    pub host: String,
    /// `None` means: whatever `~/.ssh/config` or the local user name says.
    pub ssh_user: Option<String>,
    /// `None` means: whatever `~/.ssh/config` says, else 22.
    pub ssh_port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// On the hive; a leading `~/` is the remote user's home.
    pub install_dir: String,
    /// Every group the hive is in, directly or through children.
    pub groups: BTreeSet<String>,
    pub vars: toml::Table,
}

impl Hive {
    pub fn is_localhost(&self) -> bool {
        self.alias == "localhost" || self.host == "127.0.0.1" || self.host == "localhost"
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub path: PathBuf,
    pub hives: BTreeMap<String, Hive>,
    /// Group name to its members' aliases (children included).
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Group name to the hives it names itself, and to its child groups: the tree
    /// `inventory graph` draws.
    pub direct_hives: BTreeMap<String, BTreeSet<String>>,
    pub children: BTreeMap<String, Vec<String>>,
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    File(#[from] Box<FileError>),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no hive matches {pattern:?}")]
    NoMatch { pattern: String, known: Vec<String> },
}

impl InventoryError {
    pub fn hint(&self) -> Option<String> {
        match self {
            InventoryError::NoMatch { known, .. } if known.is_empty() => {
                Some("the inventory has no hives: add a [hives.NAME] table".to_owned())
            }
            InventoryError::NoMatch { known, .. } => {
                Some(format!("known hives and groups: {}", known.join(", ")))
            }
            _ => None,
        }
    }
}

impl Inventory {
    /// Loads an inventory file; a missing file is an empty inventory only when
    /// `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Inventory, InventoryError> {
        if !required && !path.exists() {
            return Ok(Inventory {
                path: path.to_owned(),
                ..Inventory::default()
            });
        }
        let file: InventoryFile = crate::read_toml(path)?;
        Inventory::resolve(path, file)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
        let file: InventoryFile = crate::parse_toml(path, text)?;
        Inventory::resolve(path, file)
    }

    fn resolve(path: &Path, file: InventoryFile) -> Result<Inventory, InventoryError> {
        let invalid = |message: String| InventoryError::Invalid {
            path: path.to_owned(),
            message,
        };

        for name in file.groups.keys() {
            if !is_valid_name(name) || name == "all" {
                return Err(invalid(format!(
                    "group name {name:?} is not valid (letters, digits, '-', '_', '.'; not \"all\")"
                )));
            }
        }
        // Direct members of each group, from both sides.
        let mut direct: BTreeMap<String, BTreeSet<String>> = file
            .groups
            .keys()
            .map(|g| (g.clone(), BTreeSet::new()))
            .collect();
        for (alias, entry) in &file.hives {
            if !is_valid_name(alias) || alias == "all" {
                return Err(invalid(format!(
                    "hive alias {alias:?} is not valid (letters, digits, '-', '_', '.'; not \"all\")"
                )));
            }
            if entry.host.trim().is_empty() {
                return Err(invalid(format!("hive {alias:?} has an empty host")));
            }
            for group in &entry.groups {
                if !is_valid_name(group) || group == "all" {
                    return Err(invalid(format!(
                        "hive {alias:?} names invalid group {group:?}"
                    )));
                }
                direct
                    .entry(group.clone())
                    .or_default()
                    .insert(alias.clone());
            }
        }
        for (group, entry) in &file.groups {
            for alias in &entry.hives {
                if !file.hives.contains_key(alias) {
                    return Err(invalid(format!(
                        "group {group:?} lists hive {alias:?}, which has no [hives.{alias}] table"
                    )));
                }
                direct
                    .entry(group.clone())
                    .or_default()
                    .insert(alias.clone());
            }
            for child in &entry.children {
                if !file.groups.contains_key(child) && !direct.contains_key(child) {
                    return Err(invalid(format!(
                        "group {group:?} has unknown child group {child:?}"
                    )));
                }
            }
        }

        // Expand children; a cycle is an error rather than an endless walk.
        let mut groups = BTreeMap::new();
        for group in direct.keys() {
            let mut members = BTreeSet::new();
            let mut trail = Vec::new();
            collect_members(group, &file.groups, &direct, &mut members, &mut trail)
                .map_err(invalid)?;
            groups.insert(group.clone(), members);
        }

        let mut hives = BTreeMap::new();
        for (alias, entry) in &file.hives {
            let member_of: BTreeSet<String> = groups
                .iter()
                .filter(|(_, members)| members.contains(alias))
                .map(|(g, _)| g.clone())
                .collect();
            // Defaults first, then groups (parents before children, by depth), then host.
            let mut vars = file.defaults.vars.clone();
            let mut ordered: Vec<&String> = member_of.iter().collect();
            ordered.sort_by_key(|g| std::cmp::Reverse(groups.get(*g).map_or(0, |m| m.len())));
            for group in ordered {
                if let Some(entry) = file.groups.get(group) {
                    vars.extend(entry.vars.clone());
                }
            }
            vars.extend(entry.vars.clone());
            let port = entry.ssh_port.or(file.defaults.ssh_port);
            if port == Some(0) {
                return Err(invalid(format!("hive {alias:?} has ssh_port 0")));
            }
            hives.insert(
                alias.clone(),
                Hive {
                    alias: alias.clone(),
                    host: entry.host.clone(),
                    ssh_user: entry
                        .ssh_user
                        .clone()
                        .or_else(|| file.defaults.ssh_user.clone()),
                    ssh_port: port,
                    identity_file: entry
                        .identity_file
                        .as_deref()
                        .or(file.defaults.identity_file.as_deref())
                        .map(|p| beside(path, p)),
                    install_dir: entry
                        .install_dir
                        .clone()
                        .unwrap_or_else(|| file.defaults.install_dir.clone()),
                    groups: member_of,
                    vars,
                },
            );
        }
        let children = file
            .groups
            .iter()
            .filter(|(_, g)| !g.children.is_empty())
            .map(|(name, g)| (name.clone(), g.children.clone()))
            .collect();
        Ok(Inventory {
            path: path.to_owned(),
            hives,
            groups,
            direct_hives: direct,
            children,
            known_hosts: file
                .defaults
                .known_hosts
                .as_deref()
                .map(|p| beside(path, p)),
        })
    }

    /// The hives a host pattern selects, in alias order.
    pub fn select(&self, pattern: &str) -> Result<Vec<&Hive>, InventoryError> {
        let mut selected: Option<BTreeSet<&str>> = None;
        for (i, term) in pattern.split(':').enumerate() {
            let (op, name) = if let Some(rest) = term.strip_prefix('&') {
                ('&', rest)
            } else if let Some(rest) = term.strip_prefix('!') {
                ('!', rest)
            } else {
                ('+', term)
            };
            let matched = self.match_term(name);
            let current = selected.get_or_insert_with(BTreeSet::new);
            match op {
                '&' if i > 0 => current.retain(|a| matched.contains(a)),
                '!' if i > 0 => current.retain(|a| !matched.contains(a)),
                _ => current.extend(matched),
            }
        }
        let selected = selected.unwrap_or_default();
        if selected.is_empty() {
            let mut known: Vec<String> = self.hives.keys().cloned().collect();
            known.extend(self.groups.keys().cloned());
            return Err(InventoryError::NoMatch {
                pattern: pattern.to_owned(),
                known,
            });
        }
        Ok(selected
            .into_iter()
            .filter_map(|a| self.hives.get(a))
            .collect())
    }

    /// The group tree as `ansible-inventory --graph` draws it: `@all`, top-level
    /// groups, their children and hives, and `@ungrouped`.
    pub fn graph(&self) -> String {
        let child_groups: BTreeSet<&String> = self.children.values().flatten().collect();
        let mut out = String::from("@all:\n");
        for group in self.groups.keys().filter(|g| !child_groups.contains(g)) {
            self.draw_group(group, "  ", &mut out, &mut Vec::new());
        }
        let ungrouped: Vec<&String> = self
            .hives
            .values()
            .filter(|h| h.groups.is_empty())
            .map(|h| &h.alias)
            .collect();
        if !ungrouped.is_empty() {
            out.push_str("  |--@ungrouped:\n");
            for alias in ungrouped {
                out.push_str(&format!("  |  |--{alias}\n"));
            }
        }
        out
    }

    fn draw_group<'a>(
        &'a self,
        group: &'a str,
        indent: &str,
        out: &mut String,
        trail: &mut Vec<&'a str>,
    ) {
        out.push_str(&format!("{indent}|--@{group}:\n"));
        if trail.contains(&group) {
            return;
        }
        trail.push(group);
        let inner = format!("{indent}|  ");
        for child in self.children.get(group).into_iter().flatten() {
            self.draw_group(child, &inner, out, trail);
        }
        for alias in self.direct_hives.get(group).into_iter().flatten() {
            out.push_str(&format!("{inner}|--{alias}\n"));
        }
        trail.pop();
    }

    fn match_term(&self, name: &str) -> BTreeSet<&str> {
        if name == "all" || name == "*" {
            return self.hives.keys().map(String::as_str).collect();
        }
        if let Some(hive) = self.hives.get_key_value(name) {
            return BTreeSet::from([hive.0.as_str()]);
        }
        if let Some(members) = self.groups.get(name) {
            return members
                .iter()
                .filter_map(|a| self.hives.get_key_value(a))
                .map(|h| h.0.as_str())
                .collect();
        }
        if name.contains(['*', '?']) {
            let mut out: BTreeSet<&str> = self
                .hives
                .keys()
                .filter(|a| glob_match(name, a))
                .map(String::as_str)
                .collect();
            for (group, members) in &self.groups {
                if glob_match(name, group) {
                    out.extend(
                        members
                            .iter()
                            .filter_map(|a| self.hives.get_key_value(a))
                            .map(|h| h.0.as_str()),
                    );
                }
            }
            return out;
        }
        BTreeSet::new()
    }
}

/// A path from the inventory: `~/` is the home directory, and a relative path starts
/// at the inventory file's directory, so the file works from any working directory.
fn beside(inventory: &Path, path: &str) -> PathBuf {
    let expanded = crate::paths::expand_home(path);
    match inventory.parent() {
        Some(dir) if expanded.is_relative() && !dir.as_os_str().is_empty() => dir.join(expanded),
        _ => expanded,
    }
}

fn collect_members(
    group: &str,
    groups: &BTreeMap<String, GroupEntry>,
    direct: &BTreeMap<String, BTreeSet<String>>,
    members: &mut BTreeSet<String>,
    trail: &mut Vec<String>,
) -> Result<(), String> {
    if trail.iter().any(|g| g == group) {
        trail.push(group.to_owned());
        return Err(format!(
            "group children form a cycle: {}",
            trail.join(" -> ")
        ));
    }
    trail.push(group.to_owned());
    if let Some(own) = direct.get(group) {
        members.extend(own.iter().cloned());
    }
    if let Some(entry) = groups.get(group) {
        for child in &entry.children {
            collect_members(child, groups, direct, members, trail)?;
        }
    }
    trail.pop();
    Ok(())
}

/// Shell-style glob with `*` and `?`, no character classes.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[defaults]
ssh_user = "rbee"
ssh_port = 22
identity_file = "~/.ssh/id_ed25519"
install_dir = "~/.rbee"
vars = { worker_device = "cpu", tier = "default" }

[hives.gpu-a]
host = "192.168.56.11"
groups = ["gpu"]

[hives.gpu-b]
host = "192.168.56.12"
groups = ["gpu", "rack2"]
vars = { tier = "host" }

[hives.localhost]
host = "127.0.0.1"

[groups.gpu.vars]
worker_device = "cuda:0"
tier = "group"

[groups.datacenter]
children = ["gpu"]
"#;

    fn example() -> Inventory {
        Inventory::parse(Path::new("inventory.toml"), EXAMPLE).expect("example parses")
    }

    fn aliases(inv: &Inventory, pattern: &str) -> Vec<String> {
        match inv.select(pattern) {
            Ok(hives) => hives.iter().map(|h| h.alias.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn patterns_select_as_ansible_does() {
        let inv = example();
        let cases: &[(&str, &[&str])] = &[
            ("all", &["gpu-a", "gpu-b", "localhost"]),
            ("gpu-a", &["gpu-a"]),
            ("gpu", &["gpu-a", "gpu-b"]),
            ("datacenter", &["gpu-a", "gpu-b"]),
            ("gpu-*", &["gpu-a", "gpu-b"]),
            ("gpu-a:localhost", &["gpu-a", "localhost"]),
            ("gpu:&rack2", &["gpu-b"]),
            ("all:!gpu", &["localhost"]),
            ("gpu:!gpu-a", &["gpu-b"]),
            ("nope", &[]),
            ("gpu:!gpu", &[]),
        ];
        for (pattern, expected) in cases {
            assert_eq!(aliases(&inv, pattern), *expected, "pattern {pattern:?}");
        }
    }

    #[test]
    fn vars_resolve_host_over_group_over_defaults() {
        let inv = example();
        let var = |alias: &str, key: &str| inv.hives[alias].vars[key].as_str().map(str::to_owned);
        assert_eq!(var("gpu-a", "worker_device").as_deref(), Some("cuda:0"));
        assert_eq!(var("gpu-a", "tier").as_deref(), Some("group"));
        assert_eq!(var("gpu-b", "tier").as_deref(), Some("host"));
        assert_eq!(var("localhost", "worker_device").as_deref(), Some("cpu"));
        assert!(inv.hives["gpu-a"].groups.contains("datacenter"));
        assert_eq!(inv.hives["gpu-a"].ssh_user.as_deref(), Some("rbee"));
        assert!(inv.hives["localhost"].is_localhost());
    }

    #[test]
    fn the_graph_draws_groups_children_and_ungrouped_hives() {
        let graph = example().graph();
        let expected = "@all:\n  |--@datacenter:\n  |  |--@gpu:\n  |  |  |--gpu-a\n  |  |  |--gpu-b\n  |--@rack2:\n  |  |--gpu-b\n  |--@ungrouped:\n  |  |--localhost\n";
        assert_eq!(graph, expected);
    }

    #[test]
    fn no_match_hints_at_known_names() {
        let err = example().select("gpu-z").expect_err("no match");
        assert!(err.hint().unwrap_or_default().contains("gpu-a"));
    }

    #[test]
    fn invalid_inventories_say_where_and_why() {
        let cases = [
            (
                "[hives.a]\nhost = \"h\"\nport = 22\n",
                "unknown field `port`",
            ),
            ("[hives.a]\n", "missing field `host`"),
            ("[hives.\"a b\"]\nhost = \"h\"\n", "not valid"),
            ("[hives.a]\nhost = \"\"\n", "empty host"),
            ("[groups.g]\nchildren = [\"x\"]\n", "unknown child group"),
            (
                "[groups.g]\nchildren = [\"h\"]\n[groups.h]\nchildren = [\"g\"]\n",
                "cycle",
            ),
            ("[groups.g]\nhives = [\"zz\"]\n", "no [hives.zz] table"),
            ("[defaults]\nssh_port = \"22\"\n", "line 2"),
        ];
        for (text, expected) in cases {
            let err = Inventory::parse(Path::new("inv.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.contains("inv.toml"), "{err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("gpu-*", "gpu-a", true),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a*c", "ab", false),
            ("*b*", "abc", true),
        ] {
            assert_eq!(glob_match(p, t), m, "{p} {t}");
        }
    }
}

#[cfg(test)]
mod example_file {
    #[test]
    fn the_shipped_example_inventory_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/example.toml");
        let inventory = super::Inventory::load(&path, true).expect("inventory/example.toml parses");
        assert_eq!(inventory.select("lab").map(|h| h.len()).ok(), Some(2));
        assert_eq!(
            inventory.hives["gpu-a"].vars["worker_device"].as_str(),
            Some("cuda:0")
        );
    }

    #[test]
    fn the_lab_inventory_is_valid_and_its_paths_start_beside_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory");
        let inventory =
            super::Inventory::load(&dir.join("lab.toml"), true).expect("inventory/lab.toml parses");
        assert_eq!(inventory.select("lab").map(|h| h.len()).ok(), Some(4));
        assert_eq!(
            inventory.hives["hive-1"].identity_file.as_deref(),
            Some(dir.join("../lab/run/id_ed25519").as_path())
        );
    }
}
