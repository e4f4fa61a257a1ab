//! Playbooks: plays of tasks that bring hives to a desired state, in TOML.
//!
//! ```toml
//! [[play]]
//! name = "site"
//! hosts = "lab:!broken"        # a host pattern, as everywhere
//! serial = 1                   # or "25%": rolling batches
//! max_fail_percentage = 0      # abort the play when more of a batch fails
//! strategy = "linear"          # or "free"
//! vars = { model = "local:SmolLM2-135M-Instruct.Q4_1.gguf" }
//!
//! [[play.tasks]]
//! name = "one worker per hive"
//! worker_ensure = { model = "{{ model }}", device = "{{ worker_device | default('cpu') }}", count = 1 }
//! when = "not (skip_workers | default(false))"
//! retries = 2
//! delay = 5
//! timeout = 120
//! ```
//!
//! A task is one action with its arguments; string arguments may hold Jinja2
//! templates as Ansible writes them (`{{ name }}`, `{{ name | default(value) }}`,
//! `{{ tier | lower }}`), and `when` is a Jinja2 expression (`when.rs`, minijinja).
//! Variables are the hive's (host over group over defaults), under the play's `vars`,
//! plus `inventory_hostname`, `host` and `group_names`. Templates are checked when the
//! playbook loads and filled per hive when the task runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::FileError;

pub mod when;

pub use when::Condition;

#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub path: PathBuf,
    pub plays: Vec<Play>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Play {
    pub name: String,
    pub hosts: String,
    pub serial: Option<Serial>,
    pub max_fail_percentage: Option<u8>,
    pub strategy: Strategy,
    pub vars: toml::Table,
    pub tasks: Vec<Task>,
}

/// How many hives a rolling batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    Count(usize),
    Percent(u8),
}

impl Serial {
    /// The batch size for `hosts` hives: at least one.
    pub fn batch_size(self, hosts: usize) -> usize {
        match self {
            Serial::Count(n) => n,
            Serial::Percent(p) => hosts * usize::from(p) / 100,
        }
        .max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Each task runs on every hive of the batch before the next task starts.
    #[default]
    Linear,
    /// Each hive runs through the tasks at its own pace.
    Free,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub action: Action,
    /// Every condition must hold, or the task is skipped on that hive.
    pub when: Vec<Condition>,
    /// Extra attempts after a failure.
    pub retries: u32,
    pub delay: Duration,
    pub timeout: Option<Duration>,
}

/// A task's operation, with its arguments as written (templates unresolved).
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    pub args: toml::Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    HiveInstall,
    HiveStart,
    HiveRefresh,
    ModelDownload,
    ModelPush,
    WorkerEnsure,
    WorkerStop,
    WaitReady,
}

impl ActionKind {
    const ALL: [ActionKind; 8] = [
        ActionKind::HiveInstall,
        ActionKind::HiveStart,
        ActionKind::HiveRefresh,
        ActionKind::ModelDownload,
        ActionKind::ModelPush,
        ActionKind::WorkerEnsure,
        ActionKind::WorkerStop,
        ActionKind::WaitReady,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActionKind::HiveInstall => "hive_install",
            ActionKind::HiveStart => "hive_start",
            ActionKind::HiveRefresh => "hive_refresh",
            ActionKind::ModelDownload => "model_download",
            ActionKind::ModelPush => "model_push",
            ActionKind::WorkerEnsure => "worker_ensure",
            ActionKind::WorkerStop => "worker_stop",
            ActionKind::WaitReady => "wait_ready",
        }
    }

    fn from_name(name: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The argument names the action takes, and which of them it requires.
    fn params(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ActionKind::HiveInstall | ActionKind::HiveStart => (&["accept_new_host_keys"], &[]),
            ActionKind::HiveRefresh => (&[], &[]),
            ActionKind::ModelDownload => (&["model"], &["model"]),
            ActionKind::ModelPush => (&["path"], &["path"]),
            ActionKind::WorkerEnsure => (&["model", "device", "count"], &["model"]),
            ActionKind::WorkerStop => (&["model"], &[]),
            ActionKind::WaitReady => (&["model", "timeout_s"], &["model"]),
        }
    }
}

/// A task's action with its arguments resolved for one hive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    HiveInstall {
        accept_new_host_keys: bool,
    },
    HiveStart {
        accept_new_host_keys: bool,
    },
    HiveRefresh,
    ModelDownload {
        model: String,
    },
    ModelPush {
        path: String,
    },
    WorkerEnsure {
        model: String,
        device: String,
        count: usize,
    },
    WorkerStop {
        model: Option<String>,
    },
    WaitReady {
        model: String,
        timeout_s: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostKeysArgs {
    #[serde(default)]
    accept_new_host_keys: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelArgs {
    model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushArgs {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnsureArgs {
    model: String,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_count")]
    count: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopArgs {
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    model: String,
    #[serde(default = "default_wait_s")]
    timeout_s: u64,
}

fn default_device() -> String {
    "cpu".to_owned()
}

fn default_count() -> usize {
    1
}

fn default_wait_s() -> u64 {
    120
}

impl Action {
    /// The arguments with every template filled from `vars`, checked against the
    /// action's parameters.
    pub fn resolve(&self, vars: &toml::Table) -> Result<Resolved, String> {
        let mut args = toml::Table::new();
        for (key, value) in &self.args {
            let value =
                when::render_value(value, vars).map_err(|e| format!("argument `{key}`: {e}"))?;
            args.insert(key.clone(), value);
        }
        let args = toml::Value::Table(args);
        let typed = |e: toml::de::Error| {
            format!("{} arguments: {}", self.kind.name(), e.message().trim_end())
        };
        Ok(match self.kind {
            ActionKind::HiveInstall => Resolved::HiveInstall {
                accept_new_host_keys: args
                    .try_into::<HostKeysArgs>()
                    .map_err(typed)?
                    .accept_new_host_keys,
            },
            ActionKind::HiveStart => Resolved::HiveStart {
                accept_new_host_keys: args
                    .try_into::<HostKeysArgs>()
                    .map_err(typed)?
                    .accept_new_host_keys,
            },
            ActionKind::HiveRefresh => Resolved::HiveRefresh,
            ActionKind::ModelDownload => Resolved::ModelDownload {
                model: args.try_into::<ModelArgs>().map_err(typed)?.model,
            },
            ActionKind::ModelPush => Resolved::ModelPush {
                path: args.try_into::<PushArgs>().map_err(typed)?.path,
            },
            ActionKind::WorkerEnsure => {
                let a: EnsureArgs = args.try_into().map_err(typed)?;
                Resolved::WorkerEnsure {
                    model: a.model,
                    device: a.device,
                    count: a.count,
                }
            }
            ActionKind::WorkerStop => Resolved::WorkerStop {
                model: args.try_into::<StopArgs>().map_err(typed)?.model,
            },
            ActionKind::WaitReady => {
                let a: WaitArgs = args.try_into().map_err(typed)?;
                Resolved::WaitReady {
                    model: a.model,
                    timeout_s: a.timeout_s,
                }
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error(transparent)]
    File(#[from] Box<FileError>),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl PlaybookError {
    pub fn hint(&self) -> String {
        match self {
            PlaybookError::File(_) => {
                "a playbook is TOML: [[play]] tables with hosts = \"PATTERN\" and [[play.tasks]]"
                    .to_owned()
            }
            PlaybookError::Invalid { .. } => format!(
                "a playbook is [[play]] tables with hosts = \"PATTERN\", each with [[play.tasks]]; a task has exactly one action: {} (playbooks/site.toml is an example)",
                ActionKind::ALL.map(ActionKind::name).join(", ")
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookFile {
    #[serde(default)]
    play: Vec<PlayEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayEntry {
    name: Option<String>,
    hosts: String,
    serial: Option<toml::Value>,
    max_fail_percentage: Option<i64>,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    tasks: Vec<toml::Table>,
}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
        let file: PlaybookFile = crate::read_toml(path)?;
        Playbook::resolve(path, file)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Playbook, PlaybookError> {
        let file: PlaybookFile = crate::parse_toml(path, text)?;
        Playbook::resolve(path, file)
    }

    fn resolve(path: &Path, file: PlaybookFile) -> Result<Playbook, PlaybookError> {
        let invalid = |message: String| PlaybookError::Invalid {
            path: path.to_owned(),
            message,
        };
        if file.play.is_empty() {
            return Err(invalid("the playbook has no [[play]]".to_owned()));
        }
        let mut plays = Vec::new();
        for (index, entry) in file.play.into_iter().enumerate() {
            let name = entry
                .name
                .clone()
                .unwrap_or_else(|| format!("play {}", index + 1));
            let at = |message: String| invalid(format!("play {name:?}: {message}"));
            if entry.hosts.trim().is_empty() {
                return Err(at(
                    "hosts is empty; name a pattern such as \"all\"".to_owned()
                ));
            }
            let serial = entry
                .serial
                .as_ref()
                .map(parse_serial)
                .transpose()
                .map_err(at)?;
            let max_fail_percentage = match entry.max_fail_percentage {
                None => None,
                Some(p @ 0..=100) => Some(p as u8),
                Some(p) => {
                    return Err(at(format!("max_fail_percentage {p} is not within 0..=100")));
                }
            };
            let mut tasks = Vec::new();
            for (t, table) in entry.tasks.into_iter().enumerate() {
                tasks.push(parse_task(table, t).map_err(&at)?);
            }
            plays.push(Play {
                name,
                hosts: entry.hosts,
                serial,
                max_fail_percentage,
                strategy: entry.strategy,
                vars: entry.vars,
                tasks,
            });
        }
        Ok(Playbook {
            path: path.to_owned(),
            plays,
        })
    }
}

fn parse_serial(value: &toml::Value) -> Result<Serial, String> {
    match value {
        toml::Value::Integer(n) if *n >= 1 => Ok(Serial::Count(*n as usize)),
        toml::Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<u8>().ok())
            .filter(|p| (1..=100).contains(p))
            .map(Serial::Percent)
            .ok_or_else(|| format!("serial {s:?} is not a percentage such as \"25%\"")),
        other => Err(format!(
            "serial {other} is neither a positive count nor a percentage"
        )),
    }
}

fn parse_task(mut table: toml::Table, index: usize) -> Result<Task, String> {
    let label = match table.get("name") {
        Some(toml::Value::String(name)) => name.clone(),
        _ => format!("task {}", index + 1),
    };
    let at = |message: String| format!("task {label:?}: {message}");
    let name = match table.remove("name") {
        None => None,
        Some(toml::Value::String(name)) => Some(name),
        Some(other) => return Err(at(format!("name {other} is not a string"))),
    };
    let when = match table.remove("when") {
        None => Vec::new(),
        Some(toml::Value::String(text)) => vec![when::parse(&text).map_err(at)?],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => when::parse(text).map_err(at),
                other => Err(at(format!("when entry {other} is not a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(at(format!("when {other} is neither a string nor a list"))),
    };
    let seconds = |key: &str, value: Option<toml::Value>| -> Result<Option<u64>, String> {
        match value {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if n >= 0 => Ok(Some(n as u64)),
            Some(other) => Err(at(format!("{key} {other} is not a whole number ≥ 0"))),
        }
    };
    let retries = seconds("retries", table.remove("retries"))?.unwrap_or(0);
    let delay = seconds("delay", table.remove("delay"))?.unwrap_or(5);
    let timeout = seconds("timeout", table.remove("timeout"))?;
    if timeout == Some(0) {
        return Err(at(
            "timeout 0 would fail every run; leave it out for none".to_owned()
        ));
    }
    let mut actions = table.into_iter();
    let (key, args) = match (actions.next(), actions.next()) {
        (Some(action), None) => action,
        (None, _) => return Err(at("has no action".to_owned())),
        (Some((a, _)), Some((b, _))) => {
            return Err(at(format!(
                "has more than one action or an unknown key: `{a}` and `{b}`"
            )));
        }
    };
    let kind = ActionKind::from_name(&key).ok_or_else(|| at(format!("unknown action `{key}`")))?;
    let args = match args {
        toml::Value::Table(args) => args,
        other => {
            return Err(at(format!(
                "`{key}` takes a table of arguments, e.g. {key} = {{ ... }}, not {other}"
            )));
        }
    };
    let (known, required) = kind.params();
    if let Some(unknown) = args.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(at(format!(
            "`{key}` has no argument `{unknown}` (it takes: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    if let Some(missing) = required.iter().find(|r| !args.contains_key(**r)) {
        return Err(at(format!("`{key}` needs the argument `{missing}`")));
    }
    for (name, value) in &args {
        when::check_templates(value).map_err(|e| at(format!("argument `{name}`: {e}")))?;
    }
    Ok(Task {
        name: name.unwrap_or_else(|| kind.name().to_owned()),
        action: Action { kind, args },
        when,
        retries: retries.min(u64::from(u32::MAX)) as u32,
        delay: Duration::from_secs(delay),
        timeout: timeout.map(Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = r#"
[[play]]
name = "site"
hosts = "lab"
serial = "50%"
max_fail_percentage = 25
vars = { model = "local:m.gguf" }

[[play.tasks]]
hive_install = {}

[[play.tasks]]
name = "a worker"
worker_ensure = { model = "{{ model }}", device = "{{ worker_device | default('cpu') }}", count = "{{ n }}" }
when = ["inventory_hostname != 'hive-2'", "n is defined"]
retries = 2
delay = 1
timeout = 30
"#;

    fn vars(pairs: &[(&str, toml::Value)]) -> toml::Table {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_playbook_parses_and_resolves_per_hive() {
        let book = Playbook::parse(Path::new("site.toml"), SITE).expect("parses");
        let play = &book.plays[0];
        assert_eq!(play.serial, Some(Serial::Percent(50)));
        assert_eq!(play.serial.map(|s| s.batch_size(4)), Some(2));
        assert_eq!(play.max_fail_percentage, Some(25));
        assert_eq!(play.tasks[0].name, "hive_install");
        let task = &play.tasks[1];
        assert_eq!((task.retries, task.delay.as_secs()), (2, 1));
        let host = vars(&[
            ("model", "local:m.gguf".into()),
            ("n", 2.into()),
            ("inventory_hostname", "hive-1".into()),
        ]);
        assert!(task.when.iter().all(|c| c.holds(&host).unwrap_or(false)));
        assert_eq!(
            task.action.resolve(&host),
            Ok(Resolved::WorkerEnsure {
                model: "local:m.gguf".into(),
                device: "cpu".into(),
                count: 2
            })
        );
        let other = vars(&[("n", 2.into()), ("inventory_hostname", "hive-2".into())]);
        assert_eq!(task.when[0].holds(&other), Ok(false));
        let missing = task.action.resolve(&vars(&[("n", 1.into())]));
        assert!(missing.is_err_and(|e| e.contains("model")));
    }

    #[test]
    fn bad_playbooks_say_where_and_why() {
        let cases = [
            ("", "no [[play]]"),
            ("[[play]]\nhosts = \"\"\n", "hosts is empty"),
            ("[[play]]\nhosts = \"a\"\nserial = 0\n", "serial"),
            ("[[play]]\nhosts = \"a\"\nserial = \"x%\"\n", "percentage"),
            (
                "[[play]]\nhosts = \"a\"\nmax_fail_percentage = 101\n",
                "0..=100",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nname = \"t\"\n",
                "no action",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nfrobnicate = {}\n",
                "unknown action",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nhive_install = {}\nmodel_list = {}\n",
                "more than one action",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nmodel_push = {}\n",
                "needs the argument `path`",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nmodel_push = { path = \"x\", size = 1 }\n",
                "no argument `size`",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nhive_start = {}\nwhen = \"a ==\"\n",
                "task \"task 1\": when \"a ==\": line 1 column 3: syntax error",
            ),
            (
                "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nname = \"p\"\nmodel_push = { path = \"m/{{ f | }}\" }\n",
                "task \"p\": argument `path`: \"m/{{ f | }}\": line 1 column 10: syntax error",
            ),
            (
                "[[play]]\nhosts = \"a\"\nport = 1\n",
                "unknown field `port`",
            ),
            ("[[play]]\nhosts = 3\n", "line 2"),
        ];
        for (text, expected) in cases {
            let err = Playbook::parse(Path::new("pb.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.contains("pb.toml"), "{err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn arguments_of_the_wrong_type_fail_on_resolve() {
        let text = "[[play]]\nhosts = \"a\"\n[[play.tasks]]\nworker_ensure = { model = \"m\", count = \"two\" }\n";
        let book = Playbook::parse(Path::new("pb.toml"), text).expect("parses");
        let err = book.plays[0].tasks[0]
            .action
            .resolve(&toml::Table::new())
            .expect_err("count is not a number");
        assert!(
            err.contains("count") || err.contains("invalid type"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_playbooks_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        for name in ["site.toml", "teardown.toml"] {
            let book = Playbook::load(&dir.join(name)).expect(name);
            assert!(!book.plays.is_empty(), "{name}");
        }
    }
}
