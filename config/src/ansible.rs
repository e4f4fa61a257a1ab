//! `inventory import`: an Ansible inventory (INI or YAML) as an rbee inventory.
//!
//! Hosts become hives (`ansible_host`, `ansible_port`, `ansible_user` and
//! `ansible_ssh_private_key_file` become `host`, `ssh_port`, `ssh_user` and
//! `identity_file`); groups keep their members, children and vars; the `all` group's
//! vars become `[defaults]`. Connection settings given on a group go down to its
//! hosts, as Ansible applies them, since rbee groups carry only vars.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rbee_protocol::validate::is_valid_name;

/// Ansible's names for the settings rbee keeps as hive fields.
const HOST_KEYS: [&str; 1] = ["ansible_host"];
const PORT_KEYS: [&str; 2] = ["ansible_port", "ansible_ssh_port"];
const USER_KEYS: [&str; 2] = ["ansible_user", "ansible_ssh_user"];
const KEY_KEYS: [&str; 2] = ["ansible_ssh_private_key_file", "ansible_private_key_file"];

#[derive(Debug, Default)]
struct Imported {
    /// Host name to its own vars, in the order first seen.
    hosts: BTreeMap<String, toml::Table>,
    groups: BTreeMap<String, Group>,
    all_vars: toml::Table,
}

#[derive(Debug, Default)]
struct Group {
    hosts: BTreeSet<String>,
    children: BTreeSet<String>,
    vars: toml::Table,
}

/// Converts the Ansible inventory at `path` (INI, or YAML for `.yml`/`.yaml`) to the
/// text of an rbee inventory.
pub fn import(path: &Path, text: &str) -> Result<String, String> {
    let where_ = path.display();
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"));
    let imported = if yaml {
        parse_yaml(text).map_err(|e| format!("{where_}: {e}"))?
    } else {
        parse_ini(text).map_err(|e| format!("{where_}: {e}"))?
    };
    let converted = render(&imported).map_err(|e| format!("{where_}: {e}"))?;
    // What rbee cannot represent (a group that is its own child, say) is refused here,
    // with the inventory parser's reason, rather than written out to fail later.
    crate::Inventory::parse(Path::new("inventory.toml"), &converted)
        .map_err(|e| format!("{where_}: the converted inventory would not load: {e}"))?;
    Ok(converted)
}

fn parse_ini(text: &str) -> Result<Imported, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Section {
        Hosts,
        Vars,
        Children,
    }
    let mut imported = Imported::default();
    let mut current: Option<(String, Section)> = None;
    for (index, raw) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}", index + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header
                .strip_suffix(']')
                .ok_or_else(|| at(format!("section header {line:?} has no closing ]")))?;
            let (name, section) = match header.split_once(':') {
                None => (header, Section::Hosts),
                Some((name, "vars")) => (name, Section::Vars),
                Some((name, "children")) => (name, Section::Children),
                Some((_, other)) => {
                    return Err(at(format!(
                        "unknown section kind :{other} (Ansible has :vars and :children)"
                    )));
                }
            };
            if name != "all" {
                imported.groups.entry(name.to_owned()).or_default();
            }
            current = Some((name.to_owned(), section));
            continue;
        }
        match current.clone() {
            None => {
                let (hosts, vars) = parse_host_line(line).map_err(at)?;
                for host in hosts {
                    imported.hosts.entry(host).or_default().extend(vars.clone());
                }
            }
            Some((group, Section::Hosts)) => {
                let (hosts, vars) = parse_host_line(line).map_err(at)?;
                for host in hosts {
                    imported
                        .hosts
                        .entry(host.clone())
                        .or_default()
                        .extend(vars.clone());
                    if group != "all" {
                        imported
                            .groups
                            .entry(group.clone())
                            .or_default()
                            .hosts
                            .insert(host);
                    }
                }
            }
            Some((group, Section::Vars)) => {
                let (key, value) = line
                    .split_once('=')
                    .ok_or_else(|| at(format!("{line:?} is not key=value")))?;
                let value = ini_value(value.trim(), false);
                let vars = if group == "all" {
                    &mut imported.all_vars
                } else {
                    &mut imported.groups.entry(group).or_default().vars
                };
                vars.insert(key.trim().to_owned(), value);
            }
            Some((group, Section::Children)) => {
                if group == "all" {
                    imported.groups.entry(line.to_owned()).or_default();
                } else {
                    imported
                        .groups
                        .entry(group)
                        .or_default()
                        .children
                        .insert(line.to_owned());
                    imported.groups.entry(line.to_owned()).or_default();
                }
            }
        }
    }
    Ok(imported)
}

/// `name[01:03] key=value key="a b"`: the hosts (ranges expanded) and their vars.
fn parse_host_line(line: &str) -> Result<(Vec<String>, toml::Table), String> {
    let words = split_words(line)?;
    let (name, rest) = words
        .split_first()
        .ok_or_else(|| "a host line without a host".to_owned())?;
    let mut vars = toml::Table::new();
    // `host:port`, as INI inventories allow.
    let name = match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            vars.insert(
                "ansible_port".into(),
                toml::Value::Integer(port.parse().unwrap_or(22)),
            );
            host.to_owned()
        }
        _ => name.clone(),
    };
    for word in rest {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} after the host name is not key=value"))?;
        vars.insert(key.to_owned(), ini_value(value, true));
    }
    Ok((expand_range(&name)?, vars))
}

/// Splits on whitespace, keeping quoted values (`k="a b"`) whole and unquoted.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let line = match line.find(" #") {
        Some(comment) => &line[..comment],
        None => line,
    };
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (_, c) => word.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("{line:?} has an unclosed quote"));
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// Host-line values are literals as Ansible reads them (numbers, booleans); `:vars`
/// values are strings except for ports, which rbee needs as numbers.
fn ini_value(value: &str, literal: bool) -> toml::Value {
    let value = value.trim_matches(|c| c == '"' || c == '\'');
    if literal {
        if let Ok(n) = value.parse::<i64>() {
            return toml::Value::Integer(n);
        }
        match value {
            "true" | "True" => return toml::Value::Boolean(true),
            "false" | "False" => return toml::Value::Boolean(false),
            _ => {}
        }
    }
    toml::Value::String(value.to_owned())
}

/// `web[01:03]` → web01, web02, web03; `db[a:c]` → dba, dbb, dbc.
fn expand_range(name: &str) -> Result<Vec<String>, String> {
    // The `]` that closes the range comes after its `[`; a name with either missing,
    // or only in the wrong order, is no range (and fails the alias check later).
    let Some((open, close)) = name
        .find('[')
        .and_then(|open| Some((open, open + name[open..].find(']')?)))
    else {
        return Ok(vec![name.to_owned()]);
    };
    let (prefix, suffix) = (&name[..open], &name[close + 1..]);
    let (from, to) = name[open + 1..close]
        .split_once(':')
        .ok_or_else(|| format!("host range {name:?} is not [start:end]"))?;
    if let (Ok(a), Ok(b)) = (from.parse::<u32>(), to.parse::<u32>()) {
        if a > b || b - a > 10_000 {
            return Err(format!("host range {name:?} is empty or too large"));
        }
        let width = if from.starts_with('0') { from.len() } else { 0 };
        return Ok((a..=b)
            .map(|n| format!("{prefix}{n:0width$}{suffix}"))
            .collect());
    }
    let (from, to): (Vec<char>, Vec<char>) = (from.chars().collect(), to.chars().collect());
    match (from.as_slice(), to.as_slice()) {
        (&[a], &[b]) if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() && a <= b => {
            Ok((a..=b).map(|c| format!("{prefix}{c}{suffix}")).collect())
        }
        _ => Err(format!(
            "host range {name:?} is neither numeric nor letters"
        )),
    }
}

fn parse_yaml(text: &str) -> Result<Imported, String> {
    let document: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut imported = Imported::default();
    let top = match document {
        serde_norway::Value::Mapping(map) => map,
        serde_norway::Value::Null => return Ok(imported),
        _ => return Err("the top level is not a mapping of groups".to_owned()),
    };
    for (name, body) in top {
        let name = yaml_key(&name)?;
        yaml_group(&name, &body, &mut imported)?;
    }
    Ok(imported)
}

fn yaml_key(key: &serde_norway::Value) -> Result<String, String> {
    match key {
        serde_norway::Value::String(s) => Ok(s.clone()),
        serde_norway::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("{other:?} is not a name")),
    }
}

fn yaml_group(
    name: &str,
    body: &serde_norway::Value,
    imported: &mut Imported,
) -> Result<(), String> {
    if name != "all" {
        imported.groups.entry(name.to_owned()).or_default();
    }
    let body = match body {
        serde_norway::Value::Mapping(map) => map,
        serde_norway::Value::Null => return Ok(()),
        _ => return Err(format!("group {name:?} is not a mapping")),
    };
    for (key, value) in body {
        match yaml_key(key)?.as_str() {
            "hosts" => {
                let hosts = match value {
                    serde_norway::Value::Mapping(map) => map.clone(),
                    serde_norway::Value::Null => continue,
                    _ => return Err(format!("{name}.hosts is not a mapping")),
                };
                for (host, vars) in hosts {
                    let vars = yaml_vars(&vars).map_err(|e| format!("host {host:?}: {e}"))?;
                    for host in expand_range(&yaml_key(&host)?)? {
                        imported
                            .hosts
                            .entry(host.clone())
                            .or_default()
                            .extend(vars.clone());
                        if name != "all" {
                            imported
                                .groups
                                .entry(name.to_owned())
                                .or_default()
                                .hosts
                                .insert(host);
                        }
                    }
                }
            }
            "vars" => {
                let vars = yaml_vars(value).map_err(|e| format!("{name}.vars: {e}"))?;
                if name == "all" {
                    imported.all_vars.extend(vars);
                } else {
                    imported
                        .groups
                        .entry(name.to_owned())
                        .or_default()
                        .vars
                        .extend(vars);
                }
            }
            "children" => {
                let children = match value {
                    serde_norway::Value::Mapping(map) => map.clone(),
                    serde_norway::Value::Null => continue,
                    _ => return Err(format!("{name}.children is not a mapping")),
                };
                for (child, child_body) in children {
                    let child = yaml_key(&child)?;
                    if name != "all" {
                        imported
                            .groups
                            .entry(name.to_owned())
                            .or_default()
                            .children
                            .insert(child.clone());
                    }
                    yaml_group(&child, &child_body, imported)?;
                }
            }
            other => {
                return Err(format!(
                    "group {name:?} has key {other:?}; Ansible groups have hosts, vars and children"
                ));
            }
        }
    }
    Ok(())
}

fn yaml_vars(value: &serde_norway::Value) -> Result<toml::Table, String> {
    match value {
        serde_norway::Value::Null => Ok(toml::Table::new()),
        serde_norway::Value::Mapping(map) => {
            let mut vars = toml::Table::new();
            for (k, v) in map {
                if let Some(v) = yaml_to_toml(v) {
                    vars.insert(yaml_key(k)?, v);
                }
            }
            Ok(vars)
        }
        _ => Err("vars are not a mapping".to_owned()),
    }
}

fn yaml_to_toml(value: &serde_norway::Value) -> Option<toml::Value> {
    Some(match value {
        serde_norway::Value::Null => return None,
        serde_norway::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_norway::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or_default()),
        },
        serde_norway::Value::String(s) => toml::Value::String(s.clone()),
        serde_norway::Value::Sequence(items) => {
            toml::Value::Array(items.iter().filter_map(yaml_to_toml).collect())
        }
        serde_norway::Value::Mapping(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| Some((yaml_key(k).ok()?, yaml_to_toml(v)?)))
                .collect(),
        ),
        serde_norway::Value::Tagged(tagged) => return yaml_to_toml(&tagged.value),
    })
}

/// Takes Ansible's connection settings out of `vars` into an rbee hive table.
fn take_connection(vars: &mut toml::Table, into: &mut toml::Table) -> Result<(), String> {
    let mut take = |names: &[&str], field: &str| -> Result<(), String> {
        for name in names {
            if let Some(value) = vars.remove(*name) {
                // The inventory wants a port number and strings: `ansible_host=10` or
                // `ansible_user=1000` come typed from INI and YAML, and become strings.
                let value = match (field, value) {
                    ("ssh_port", toml::Value::String(s)) => toml::Value::Integer(
                        s.parse::<u16>()
                            .map_err(|_| format!("{name} {s:?} is not a port"))?
                            .into(),
                    ),
                    ("ssh_port", toml::Value::Integer(n)) => toml::Value::Integer(
                        u16::try_from(n)
                            .map_err(|_| format!("{name} {n} is not a port"))?
                            .into(),
                    ),
                    ("ssh_port", other) => return Err(format!("{name} {other} is not a port")),
                    (_, toml::Value::String(s)) => toml::Value::String(s),
                    (
                        _,
                        value @ (toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_)),
                    ) => toml::Value::String(value.to_string()),
                    (_, other) => {
                        return Err(format!("{name} is one value, not {other}"));
                    }
                };
                into.insert(field.to_owned(), value);
            }
        }
        Ok(())
    };
    take(&HOST_KEYS, "host")?;
    take(&PORT_KEYS, "ssh_port")?;
    take(&USER_KEYS, "ssh_user")?;
    take(&KEY_KEYS, "identity_file")
}

fn render(imported: &Imported) -> Result<String, String> {
    // Every group a host is in, directly or through children.
    let mut member_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, group) in &imported.groups {
        for host in &group.hosts {
            member_of.entry(host).or_default().insert(name);
        }
    }
    let mut document = toml::Table::new();

    let mut defaults = toml::Table::new();
    let mut all_vars = imported.all_vars.clone();
    take_connection(&mut all_vars, &mut defaults)?;
    if defaults.remove("host").is_some() {
        return Err(
            "the all group sets ansible_host, which rbee cannot apply to every hive".into(),
        );
    }
    if !all_vars.is_empty() {
        defaults.insert("vars".into(), toml::Value::Table(all_vars));
    }
    if !defaults.is_empty() {
        document.insert("defaults".into(), toml::Value::Table(defaults));
    }

    let mut hives = toml::Table::new();
    for (name, own) in &imported.hosts {
        if !is_valid_name(name) || name == "all" {
            return Err(format!(
                "host {name:?} is not a valid hive alias (letters, digits, '-', '_', '.')"
            ));
        }
        let mut hive = toml::Table::new();
        hive.insert("host".into(), name.clone().into());
        // Group connection settings first (parents before children), then the host's.
        let groups: Vec<&str> = groups_of(name, imported);
        for group in &groups {
            let mut vars = imported.groups[*group].vars.clone();
            take_connection(&mut vars, &mut hive)?;
        }
        let mut vars = own.clone();
        take_connection(&mut vars, &mut hive)?;
        let direct: Vec<toml::Value> = member_of
            .get(name.as_str())
            .into_iter()
            .flatten()
            .map(|g| toml::Value::String((*g).to_owned()))
            .collect();
        if !direct.is_empty() {
            hive.insert("groups".into(), toml::Value::Array(direct));
        }
        if !vars.is_empty() {
            hive.insert("vars".into(), toml::Value::Table(vars));
        }
        hives.insert(name.clone(), toml::Value::Table(hive));
    }
    if !hives.is_empty() {
        document.insert("hives".into(), toml::Value::Table(hives));
    }

    let mut groups = toml::Table::new();
    for (name, group) in &imported.groups {
        if !is_valid_name(name) {
            return Err(format!("group {name:?} is not a valid rbee group name"));
        }
        let mut table = toml::Table::new();
        if !group.children.is_empty() {
            table.insert(
                "children".into(),
                toml::Value::Array(group.children.iter().map(|c| c.clone().into()).collect()),
            );
        }
        let mut vars = group.vars.clone();
        let mut connection = toml::Table::new();
        take_connection(&mut vars, &mut connection)?;
        if !vars.is_empty() {
            table.insert("vars".into(), toml::Value::Table(vars));
        }
        groups.insert(name.clone(), toml::Value::Table(table));
    }
    if !groups.is_empty() {
        document.insert("groups".into(), toml::Value::Table(groups));
    }
    let body = toml::to_string(&document).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Imported from an Ansible inventory by `rbee-keeper inventory import`.\n\n{body}"
    ))
}

/// The groups `host` is in, ancestors before descendants, so a child's settings win.
fn groups_of<'a>(host: &str, imported: &'a Imported) -> Vec<&'a str> {
    fn depth(group: &str, imported: &Imported, seen: &mut Vec<String>) -> usize {
        if seen.iter().any(|g| g == group) {
            return 0;
        }
        seen.push(group.to_owned());
        imported
            .groups
            .iter()
            .filter(|(_, g)| g.children.contains(group))
            .map(|(parent, _)| 1 + depth(parent, imported, seen))
            .max()
            .unwrap_or(0)
    }
    fn contains(group: &str, host: &str, imported: &Imported, seen: &mut Vec<String>) -> bool {
        if seen.iter().any(|g| g == group) {
            return false;
        }
        seen.push(group.to_owned());
        let Some(g) = imported.groups.get(group) else {
            return false;
        };
        g.hosts.contains(host) || g.children.iter().any(|c| contains(c, host, imported, seen))
    }
    let mut groups: Vec<&str> = imported
        .groups
        .keys()
        .filter(|g| contains(g, host, imported, &mut Vec::new()))
        .map(String::as_str)
        .collect();
    groups.sort_by_key(|g| depth(g, imported, &mut Vec::new()));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Inventory;

    const INI: &str = r#"
# An Ansible inventory
bastion ansible_host=203.0.113.5

[gpu]
gpu-a ansible_host=10.0.0.11 ansible_port=2222 worker_device=cuda:0
gpu-b ansible_host=10.0.0.12 ansible_user=ops tier="fast lane"
node[01:02] ansible_host=10.0.1.1

[gpu:vars]
ansible_user=rbee
ansible_ssh_private_key_file=/keys/id_ed25519
quant=Q4_K_M

[datacenter:children]
gpu

[datacenter:vars]
dc=east

[all:vars]
ansible_port=22
install_dir_hint=fast
"#;

    const YAML: &str = r#"
all:
  vars:
    ansible_port: 22
    install_dir_hint: fast
  hosts:
    bastion:
      ansible_host: 203.0.113.5
  children:
    datacenter:
      vars:
        dc: east
      children:
        gpu:
          vars:
            ansible_user: rbee
            ansible_ssh_private_key_file: /keys/id_ed25519
            quant: Q4_K_M
          hosts:
            gpu-a:
              ansible_host: 10.0.0.11
              ansible_port: 2222
              worker_device: "cuda:0"
            gpu-b:
              ansible_host: 10.0.0.12
              ansible_user: ops
              tier: fast lane
            node[01:02]:
              ansible_host: 10.0.1.1
"#;

    fn check(inventory: &Inventory) {
        let aliases: Vec<&str> = inventory.hives.keys().map(String::as_str).collect();
        assert_eq!(aliases, ["bastion", "gpu-a", "gpu-b", "node01", "node02"]);
        let a = &inventory.hives["gpu-a"];
        assert_eq!(a.host, "10.0.0.11");
        assert_eq!(a.ssh_port, Some(2222));
        assert_eq!(a.ssh_user.as_deref(), Some("rbee"));
        assert_eq!(
            a.identity_file.as_deref(),
            Some(Path::new("/keys/id_ed25519"))
        );
        assert_eq!(a.vars["worker_device"].as_str(), Some("cuda:0"));
        assert_eq!(a.vars["quant"].as_str(), Some("Q4_K_M"));
        assert_eq!(a.vars["dc"].as_str(), Some("east"));
        assert_eq!(a.vars["install_dir_hint"].as_str(), Some("fast"));
        let b = &inventory.hives["gpu-b"];
        assert_eq!(b.ssh_user.as_deref(), Some("ops"));
        assert_eq!(b.ssh_port, Some(22));
        assert_eq!(b.vars["tier"].as_str(), Some("fast lane"));
        assert_eq!(inventory.hives["node02"].host, "10.0.1.1");
        assert_eq!(inventory.hives["bastion"].ssh_user, None);
        let datacenter: Vec<&str> = inventory
            .select("datacenter")
            .expect("group")
            .iter()
            .map(|h| h.alias.as_str())
            .collect();
        assert_eq!(datacenter, ["gpu-a", "gpu-b", "node01", "node02"]);
    }

    #[test]
    fn ini_and_yaml_import_to_the_same_inventory() {
        for (name, text) in [("hosts.ini", INI), ("hosts.yml", YAML)] {
            let toml = import(Path::new(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let inventory = Inventory::parse(Path::new("imported.toml"), &toml)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{toml}"));
            check(&inventory);
        }
    }

    #[test]
    fn bad_inventories_name_the_line() {
        let cases = [
            ("[gpu\nhost\n", "line 1"),
            ("[gpu:hosts]\n", "unknown section kind"),
            ("[gpu]\na b\n", "line 2"),
            ("[gpu]\nweb[1:x]\n", "host range"),
            ("[gpu]\n'bad host'\n", "not a valid hive alias"),
            ("[gpu:vars]\nnovalue\n", "not key=value"),
            // Found by the fuzzer: a `]` before the `[` once sliced backwards.
            ("[gpu]\ng]p[\n", "not a valid hive alias"),
            ("[gpu]\nweb[a:~]\n", "host range"),
            ("[gpu]\nweb ansible_port=99999\n", "not a port"),
        ];
        for (text, expected) in cases {
            let err = import(Path::new("hosts.ini"), text).expect_err(text);
            assert!(err.contains("hosts.ini"), "{err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        // Found by the fuzzer: typed values where the inventory wants strings.
        let text = import(
            Path::new("hosts.ini"),
            "[gpu]\nweb ansible_host=10 ansible_user=1000\n",
        )
        .expect("numbers as names");
        let inventory = Inventory::parse(Path::new("inventory.toml"), &text).expect(&text);
        assert_eq!(inventory.hives["web"].host, "10");
        assert_eq!(inventory.hives["web"].ssh_user.as_deref(), Some("1000"));
        let err = import(
            Path::new("h.yml"),
            "gpu:\n  hosts:\n    web:\n  children:\n    gpu:\n",
        )
        .expect_err("a group in itself");
        assert!(err.contains("h.yml") && err.contains("cycle"), "{err}");
        let err = import(Path::new("h.yml"), "all: [1, 2]").expect_err("not a mapping");
        assert!(err.contains("not a mapping"), "{err}");
        // A YAML syntax error names the file and where in it.
        let err = import(Path::new("h.yml"), "all:\n  hosts:\n    web: [1\n")
            .expect_err("unclosed sequence");
        assert!(
            err.starts_with("h.yml: not valid YAML") && err.contains("line 4 column 1"),
            "{err}"
        );
    }
}
