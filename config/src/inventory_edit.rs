//! Adding and removing a hive in an inventory file's text with `toml_edit`, so every
//! comment, blank line, key order and spacing the operator wrote survives: the only
//! bytes that change are the hive's own table (and its name in a group's `hives`
//! list on removal).

use rbee_protocol::inventory::HiveSpec;
use toml_edit::{Array, DocumentMut, Item, Table};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the inventory is not valid TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
    #[error("the inventory already has a hive {alias:?}")]
    Exists { alias: String },
    #[error("the inventory has no hive {alias:?}")]
    Missing { alias: String, known: Vec<String> },
    #[error("`hives` in the inventory is not a table of [hives.NAME] tables")]
    NotATable,
}

impl EditError {
    pub fn hint(&self) -> Option<String> {
        match self {
            EditError::Exists { alias } => Some(format!(
                "pick another alias, or take the old one out first with `rbee-keeper hive remove {alias}`"
            )),
            EditError::Missing { known, .. } if known.is_empty() => {
                Some("the inventory has no hives".to_owned())
            }
            EditError::Missing { known, .. } => Some(format!("its hives: {}", known.join(", "))),
            EditError::Parse(_) | EditError::NotATable => None,
        }
    }
}

/// `text` with a `[hives.ALIAS]` table for `spec` after the last hive (at the end when
/// there is none). Only the keys the operator gave are written; `[defaults]` supplies
/// the rest, as for every other hive.
pub fn add_hive(text: &str, alias: &str, spec: &HiveSpec) -> Result<String, EditError> {
    let mut document: DocumentMut = text.parse()?;
    let hives = hives_table(&mut document)?;
    if hives.contains_key(alias) {
        return Err(EditError::Exists {
            alias: alias.to_owned(),
        });
    }
    let mut table = Table::new();
    table["host"] = toml_edit::value(spec.host.as_str());
    if let Some(user) = &spec.ssh_user {
        table["ssh_user"] = toml_edit::value(user.as_str());
    }
    if let Some(port) = spec.ssh_port {
        table["ssh_port"] = toml_edit::value(i64::from(port));
    }
    if let Some(file) = &spec.identity_file {
        table["identity_file"] = toml_edit::value(file.as_str());
    }
    if let Some(dir) = &spec.install_dir {
        table["install_dir"] = toml_edit::value(dir.as_str());
    }
    if !spec.groups.is_empty() {
        let groups: Array = spec.groups.iter().map(String::as_str).collect();
        table["groups"] = toml_edit::value(groups);
    }
    // A blank line before it, as between the hand-written tables; removing the table
    // takes the line with it, so add-then-remove gives back the file as it was.
    if !text.is_empty() {
        table.decor_mut().set_prefix("\n");
    }
    hives.insert(alias, Item::Table(table));
    Ok(ensure_newline(document.to_string()))
}

/// `text` without the `[hives.ALIAS]` table (and the comment lines right above it,
/// which belong to it), and without `ALIAS` in any group's `hives` list.
pub fn remove_hive(text: &str, alias: &str) -> Result<String, EditError> {
    let mut document: DocumentMut = text.parse()?;
    let hives = hives_table(&mut document)?;
    if hives.remove(alias).is_none() {
        return Err(EditError::Missing {
            alias: alias.to_owned(),
            known: hives.iter().map(|(name, _)| name.to_owned()).collect(),
        });
    }
    if let Some(groups) = document.get_mut("groups").and_then(Item::as_table_like_mut) {
        for (_, group) in groups.iter_mut() {
            let members = group
                .as_table_like_mut()
                .and_then(|g| g.get_mut("hives"))
                .and_then(Item::as_array_mut);
            if let Some(members) = members {
                members.retain(|member| member.as_str() != Some(alias));
            }
        }
    }
    Ok(document.to_string())
}

/// The document's `hives` table, made (implicit, so no bare `[hives]` line is written)
/// when the file has none.
fn hives_table(document: &mut DocumentMut) -> Result<&mut Table, EditError> {
    let hives = document.entry("hives").or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    hives.as_table_mut().ok_or(EditError::NotATable)
}

fn ensure_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HAND_WRITTEN: &str = r#"# The lab, by hand.
[defaults]
ssh_user = "root"   # everyone
identity_file = "keys/id"

# The first box.
[hives.a]
host = "10.0.0.1"
groups = ["lab"]

[hives.b]   # the second
install_dir = "/srv/rbee"
host = "10.0.0.2"

# Groups come last.
[groups.lab]
hives = ["b"]
vars = { tier = "x" }
"#;

    fn spec() -> HiveSpec {
        HiveSpec {
            host: "10.0.0.3".to_owned(),
            ssh_port: Some(2222),
            install_dir: Some("~/.rbee-c".to_owned()),
            groups: vec!["lab".to_owned(), "gpu".to_owned()],
            ..HiveSpec::default()
        }
    }

    #[test]
    fn adding_writes_one_table_after_the_last_hive_and_touches_nothing_else() {
        let added = add_hive(HAND_WRITTEN, "c", &spec()).expect("added");
        let table = "\n[hives.c]\nhost = \"10.0.0.3\"\nssh_port = 2222\ninstall_dir = \"~/.rbee-c\"\ngroups = [\"lab\", \"gpu\"]\n";
        let at = HAND_WRITTEN.find("# Groups come last.").expect("marker");
        let expected = format!(
            "{}{table}\n{}",
            &HAND_WRITTEN[..at - 1],
            &HAND_WRITTEN[at..]
        );
        assert_eq!(added, expected);
        let inventory =
            crate::Inventory::parse(Path::new("inv.toml"), &added).expect("still an inventory");
        let c = &inventory.hives["c"];
        assert_eq!(c.ssh_port, Some(2222));
        assert_eq!(c.ssh_user.as_deref(), Some("root"), "defaults still apply");
        assert!(c.groups.contains("gpu") && c.groups.contains("lab"));
    }

    #[test]
    fn removing_what_was_added_gives_the_file_back_byte_for_byte() {
        let added = add_hive(HAND_WRITTEN, "c", &spec()).expect("added");
        assert_eq!(remove_hive(&added, "c").expect("removed"), HAND_WRITTEN);
    }

    #[test]
    fn removing_a_hand_written_hive_takes_its_comment_and_its_group_listing() {
        let removed = remove_hive(HAND_WRITTEN, "b").expect("removed");
        let expected = HAND_WRITTEN
            .replace(
                "[hives.b]   # the second\ninstall_dir = \"/srv/rbee\"\nhost = \"10.0.0.2\"\n\n",
                "",
            )
            .replace("hives = [\"b\"]", "hives = []");
        assert_eq!(removed, expected);
        crate::Inventory::parse(Path::new("inv.toml"), &removed).expect("still an inventory");
        let first = remove_hive(HAND_WRITTEN, "a").expect("removed");
        assert!(!first.contains("# The first box."), "{first}");
        assert!(
            first.starts_with("# The lab, by hand.\n[defaults]\n"),
            "{first}"
        );
    }

    #[test]
    fn an_empty_or_hiveless_file_gets_its_first_hive() {
        let minimal = HiveSpec {
            host: "h".to_owned(),
            ..HiveSpec::default()
        };
        assert_eq!(
            add_hive("", "a", &minimal).expect("added"),
            "[hives.a]\nhost = \"h\"\n"
        );
        let defaults = "[defaults]\nssh_user = \"u\"";
        let added = add_hive(defaults, "a", &minimal).expect("added");
        assert_eq!(
            added,
            "[defaults]\nssh_user = \"u\"\n\n[hives.a]\nhost = \"h\"\n"
        );
        assert_eq!(
            remove_hive(&added, "a").expect("removed"),
            "[defaults]\nssh_user = \"u\"\n"
        );
    }

    #[test]
    fn refusals_say_why() {
        let taken = add_hive(HAND_WRITTEN, "a", &spec()).expect_err("alias taken");
        assert!(matches!(taken, EditError::Exists { .. }));
        assert!(taken.hint().unwrap_or_default().contains("hive remove a"));
        let missing = remove_hive(HAND_WRITTEN, "z").expect_err("no such hive");
        assert_eq!(missing.hint().as_deref(), Some("its hives: a, b"));
        assert!(matches!(
            add_hive("hives = 3\n", "a", &spec()),
            Err(EditError::NotATable)
        ));
        assert!(matches!(
            add_hive("[hives\n", "a", &spec()),
            Err(EditError::Parse(_))
        ));
    }
}
