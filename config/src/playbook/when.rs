//! `when` conditions and `{{ }}` templates: Jinja2 expressions, as Ansible has them,
//! evaluated by minijinja.
//!
//! A condition is one expression (`worker_device == 'cuda:0' and gpus >= 2`,
//! `'gpu' in group_names`, `skip | default(false) | bool`, `n is not defined`); an
//! argument is a string that may hold `{{ expr }}` parts. Filters and tests are
//! minijinja's built-ins (`default`/`d`, `lower`, `upper`, `int`, `float`, `length`,
//! `join`, `is defined`, `is number`, …), Python's string and list methods
//! (`name.startswith('gpu')`) and Ansible's `bool`, which reads "yes", "on", "1" and
//! "true" as true.
//!
//! What holds as in Ansible and as before minijinja: a name that is not defined is an
//! error unless it is tested (`is defined`) or given a default; a condition whose value
//! is the string "false", "no", "0" or "" is false; a string that is exactly one
//! template keeps the expression's type (`count = "{{ n }}"` is a number). Every error
//! says where in its text it is (line and column), and the playbook adds its file,
//! play and task.
//!
//! Where minijinja differs from Python's Jinja2: a filter name is looked up when the
//! expression runs, so an unknown filter fails the task on each hive rather than the
//! playbook at load (syntax errors are found at load); and `<` between a number and a
//! string orders them by kind instead of failing.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, UndefinedBehavior};

/// One environment for every playbook: its settings are the language's rules.
static JINJA: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Arguments are model names and paths, never HTML; and a string keeps its last
    // newline, as it was written.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    // Spans on errors, so every error can say where it is.
    env.set_debug(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("bool", ansible_bool);
    env
});

/// A parsed `when` condition; [`Condition::holds`] evaluates it against a hive's vars.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
}

impl Condition {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn holds(&self, vars: &toml::Table) -> Result<bool, String> {
        let value = evaluate(&self.text, 0, &self.text, vars)
            .map_err(|e| format!("when {:?}: {e}", self.text))?;
        Ok(truthy(&value))
    }
}

/// Parses a `when` condition: its syntax is checked here, once, so a playbook with a
/// broken condition does not load.
pub fn parse(text: &str) -> Result<Condition, String> {
    if text.trim().is_empty() {
        return Err(format!("when {text:?}: the expression is empty"));
    }
    compile(text, text, 0).map_err(|e| format!("when {text:?}: {e}"))?;
    Ok(Condition {
        text: text.to_owned(),
    })
}

/// Compiles `expr`, found at byte `at` of `source`; an error says where it is.
/// minijinja reads `}}` outside brackets as the end of a `{{ }}` and then panics on the
/// next token when there was no `{{`, so such text is refused here first.
fn compile<'s>(expr: &'s str, source: &str, at: usize) -> Result<Expression<'s, 's>, String> {
    if let Some(offset) = closing_braces_at_top(expr) {
        let (line, column) = line_and_column(source, at + offset);
        return Err(format!(
            "line {line} column {column}: syntax error: `}}}}` outside brackets (a condition, like a `{{{{ }}}}` part, is one expression without `{{{{ }}}}` of its own)"
        ));
    }
    JINJA
        .compile_expression(expr)
        .map_err(|e| explain(&e, source, at, None))
}

/// Where `}}` first stands outside strings and outside every `(`, `[` and `{`, as
/// minijinja's lexer counts them.
fn closing_braces_at_top(expr: &str) -> Option<usize> {
    let bytes = expr.as_bytes();
    let mut depth = 0i64;
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'}' if depth == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// Checks the syntax of every template in `value`'s strings.
pub fn check_templates(value: &toml::Value) -> Result<(), String> {
    match value {
        toml::Value::String(text) if has_template(text) => match lone_template(text) {
            Some((inner, at)) => compile(inner, text, at)
                .map(drop)
                .map_err(|e| format!("{text:?}: {e}")),
            None => JINJA
                .template_from_str(text)
                .map(drop)
                .map_err(|e| format!("{text:?}: {}", explain(&e, text, 0, None))),
        },
        toml::Value::Array(items) => items.iter().try_for_each(check_templates),
        toml::Value::Table(table) => table.values().try_for_each(check_templates),
        _ => Ok(()),
    }
}

/// Fills `{{ expr }}` templates in the strings of `value`. A string that is exactly one
/// template takes the expression's own type (so `count = "{{ n }}"` can be a number).
pub fn render_value(value: &toml::Value, vars: &toml::Table) -> Result<toml::Value, String> {
    match value {
        toml::Value::String(text) => render_string(text, vars),
        toml::Value::Array(items) => Ok(toml::Value::Array(
            items
                .iter()
                .map(|v| render_value(v, vars))
                .collect::<Result<_, _>>()?,
        )),
        toml::Value::Table(table) => Ok(toml::Value::Table(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, vars)?)))
                .collect::<Result<_, String>>()?,
        )),
        other => Ok(other.clone()),
    }
}

fn render_string(text: &str, vars: &toml::Table) -> Result<toml::Value, String> {
    if !has_template(text) {
        return Ok(toml::Value::String(text.to_owned()));
    }
    if let Some((inner, at)) = lone_template(text) {
        let value = evaluate(inner, at, text, vars).map_err(|e| format!("{text:?}: {e}"))?;
        return to_toml(&value).map_err(|e| format!("{text:?}: {e}"));
    }
    let rendered = JINJA
        .template_from_str(text)
        .and_then(|template| template.render(context(vars)))
        .map_err(|e| format!("{text:?}: {}", explain(&e, text, 0, Some(vars))))?;
    Ok(toml::Value::String(rendered))
}

/// Whether Jinja would read anything in `text` as other than plain text.
fn has_template(text: &str) -> bool {
    ["{{", "{%", "{#"].iter().any(|open| text.contains(open))
}

/// The expression of a string that is exactly one `{{ … }}` (spaces around it
/// allowed), with its byte offset in the string.
fn lone_template(text: &str) -> Option<(&str, usize)> {
    let trimmed = text.trim();
    let inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.trim().is_empty() {
        return None;
    }
    let at = text.len() - text.trim_start().len() + 2;
    Some((inner, at))
}

/// Evaluates the expression `expr`, found at byte `at` of `source` (for positions).
fn evaluate(expr: &str, at: usize, source: &str, vars: &toml::Table) -> Result<Value, String> {
    let value = compile(expr, source, at)?
        .eval(context(vars))
        .map_err(|e| explain(&e, source, at, Some(vars)))?;
    // Strict mode refuses to use an undefined value, but an expression that is only
    // a name (`when = "missing"`) gives it back unused.
    if value.is_undefined() {
        return Err(undefined(source, vars).unwrap_or_else(|| "the value is undefined".to_owned()));
    }
    Ok(value)
}

/// An error as a sentence that says where it is in `source` (the error's spans count
/// from byte `at`) and, for a name that is not defined, which name and how to guard it.
fn explain(error: &Error, source: &str, at: usize, vars: Option<&toml::Table>) -> String {
    if let (ErrorKind::UndefinedError, Some(vars)) = (error.kind(), vars)
        && let Some(message) = undefined(source, vars)
    {
        return message;
    }
    let what = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    match error.range() {
        Some(range) => {
            let (line, column) = line_and_column(source, at + range.start);
            format!("line {line} column {column}: {what}")
        }
        None => what,
    }
}

/// The error for the first name `source` reads that `vars` lacks, at the name.
fn undefined(source: &str, vars: &toml::Table) -> Option<String> {
    let name = undefined_name(source, vars)?;
    let position = name_offset(source, &name)
        .map(|offset| {
            let (line, column) = line_and_column(source, offset);
            format!("line {line} column {column}: ")
        })
        .unwrap_or_default();
    Some(format!(
        "{position}`{name}` is not defined (test it with `{name} is defined`, or give a default: `{name} | default(...)`)"
    ))
}

/// Where `name` first stands as a whole identifier in `source` (not an attribute, not
/// inside a longer name).
fn name_offset(source: &str, name: &str) -> Option<usize> {
    let identifier = |c: char| c.is_alphanumeric() || c == '_';
    source.match_indices(name).map(|(i, _)| i).find(|&i| {
        let before = source[..i].chars().next_back();
        let after = source[i + name.len()..].chars().next();
        !before.is_some_and(|c| identifier(c) || c == '.') && !after.is_some_and(identifier)
    })
}

/// The first name `source`'s expressions read that `vars` lacks.
fn undefined_name(source: &str, vars: &toml::Table) -> Option<String> {
    let names = match lone_template(source) {
        Some((inner, at)) => compile(inner, source, at).ok()?.undeclared_variables(false),
        None if source.contains("{{") || source.contains("{%") => JINJA
            .template_from_str(source)
            .ok()?
            .undeclared_variables(false),
        None => compile(source, source, 0).ok()?.undeclared_variables(false),
    };
    let mut missing: Vec<String> = names
        .into_iter()
        .filter(|n| !vars.contains_key(n))
        .collect();
    missing.sort();
    missing.into_iter().next()
}

fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn context(vars: &toml::Table) -> Value {
    Value::from(
        vars.iter()
            .map(|(k, v)| (k.clone(), to_jinja(v)))
            .collect::<BTreeMap<String, Value>>(),
    )
}

fn to_jinja(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(items) => Value::from(items.iter().map(to_jinja).collect::<Vec<_>>()),
        toml::Value::Table(table) => context(table),
    }
}

/// An expression's value as an argument: numbers, strings, booleans, lists and
/// tables keep their type; `none` is no argument and is refused.
fn to_toml(value: &Value) -> Result<toml::Value, String> {
    Ok(match value.kind() {
        ValueKind::Bool => toml::Value::Boolean(value.is_true()),
        ValueKind::Number if value.is_integer() => match value.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => return Err(format!("{value} is out of range")),
        },
        ValueKind::Number => {
            toml::Value::Float(f64::try_from(value.clone()).map_err(|e| format!("{value}: {e}"))?)
        }
        ValueKind::String => toml::Value::String(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::Seq | ValueKind::Iterable => toml::Value::Array(
            value
                .try_iter()
                .map_err(|e| e.to_string())?
                .map(|item| to_toml(&item))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => toml::Value::Table(
            value
                .try_iter()
                .map_err(|e| e.to_string())?
                .map(|key| {
                    let item = value.get_item(&key).map_err(|e| e.to_string())?;
                    Ok((key.to_string(), to_toml(&item)?))
                })
                .collect::<Result<_, String>>()?,
        ),
        ValueKind::None | ValueKind::Undefined => {
            return Err("the expression gives no value (none)".to_owned());
        }
        _ => toml::Value::String(value.to_string()),
    })
}

/// A condition's truth: Jinja's, except that the strings Ansible users write for
/// false ("false", "no", "0") are false too.
fn truthy(value: &Value) -> bool {
    match value.as_str() {
        Some(s) => {
            !s.is_empty() && !matches!(s.to_ascii_lowercase().as_str(), "false" | "no" | "0")
        }
        None => value.is_true(),
    }
}

/// Ansible's `bool` filter: true for `true`, 1 and the strings "yes", "on", "1" and
/// "true" (any case); false for everything else.
fn ansible_bool(value: Value) -> bool {
    match value.kind() {
        ValueKind::Bool => value.is_true(),
        ValueKind::String => matches!(
            value
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .as_str(),
            "yes" | "on" | "1" | "true"
        ),
        ValueKind::Number => f64::try_from(value).is_ok_and(|n| n == 1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> toml::Table {
        toml::from_str(
            r#"
            worker_device = "cuda:0"
            gpus = 2
            enabled = true
            group_names = ["gpu", "lab"]
            tier = "Fast"
            replicas = "3"
            skip = "no"
            disk = { free_gb = 120 }
            "#,
        )
        .expect("vars")
    }

    #[test]
    fn conditions_evaluate_as_ansible_reads_them() {
        let cases = [
            ("enabled", true),
            ("not enabled", false),
            ("worker_device == 'cuda:0'", true),
            ("worker_device != \"cuda:0\"", false),
            ("gpus >= 2 and gpus < 3", true),
            ("gpus > 2 or 'gpu' in group_names", true),
            ("'web' not in group_names", true),
            ("missing is defined", false),
            ("missing is not defined", true),
            ("missing is undefined and worker_device is defined", true),
            ("missing | default(1) == 1", true),
            ("missing | d(1) == 1", true),
            ("not (enabled and gpus == 1)", true),
            ("worker_device in ['cpu', 'cuda:0']", true),
            ("'cuda' in worker_device", true),
            ("True and not False", true),
            // Ansible users' filters, tests and methods.
            ("tier | lower == 'fast'", true),
            ("replicas | int == 3", true),
            ("replicas | int > gpus", true),
            ("missing | default('CPU') | lower == 'cpu'", true),
            ("skip | bool", false),
            ("not (missing | default('yes') | bool)", false),
            ("group_names | length == 2", true),
            ("gpus is number and tier is string", true),
            ("worker_device.startswith('cuda')", true),
            ("disk.free_gb >= 100", true),
            // A string Ansible users write for false is false.
            ("skip", false),
            ("replicas", true),
        ];
        for (text, expected) in cases {
            let condition = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(condition.holds(&vars()), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_conditions_are_errors_not_false() {
        for text in ["", "a ==", "a = b", "(a", "'open", "a | upper("] {
            assert!(parse(text).is_err(), "{text:?} should not parse");
        }
        let undefined = parse("missing == 1").expect("parses").holds(&vars());
        assert!(
            undefined
                .is_err_and(|e| e.contains("`missing` is not defined") && e.contains("default"))
        );
        let unknown = parse("gpus | frobnicate").expect("parses").holds(&vars());
        assert!(unknown.is_err_and(|e| e.contains("frobnicate")));
    }

    #[test]
    fn closing_braces_of_a_template_in_a_bare_expression_are_an_error_not_a_panic() {
        // minijinja panicked on these (a fuzzer found the first).
        let err = parse("worker}}per_hive > 0").expect_err("stray }}");
        assert!(err.contains("line 1 column 7: syntax error: `}}`"), "{err}");
        assert!(parse("gpus > 1 }} and x").is_err());
        assert!(parse("a\n  -}} b").is_err());
        let value = toml::Value::String("{{ gpus }} and {{ x }}}}".to_owned());
        assert!(
            check_templates(&value).is_ok(),
            "text after a template is text"
        );
        // Inside brackets or strings the same characters are what they are.
        let nested = parse("{'a': {'b': 1}}['a']['b'] == 1").expect("nested dicts parse");
        assert_eq!(nested.holds(&vars()), Ok(true));
        let quoted = parse("'}}' in '{{}}' and \"}}\" != ''").expect("strings parse");
        assert_eq!(quoted.holds(&vars()), Ok(true));
    }

    #[test]
    fn errors_say_where_they_are() {
        let err = parse("gpus >= 2 and == 1").expect_err("no operand");
        assert!(
            err.starts_with("when \"gpus >= 2 and == 1\": line 1 column 15: syntax error"),
            "{err}"
        );
        let err = parse("gpus > 1 and\n(missing").expect_err("unclosed");
        assert!(err.contains("line 2"), "{err}");
        let err = parse("missing")
            .expect("parses")
            .holds(&vars())
            .expect_err("undefined");
        assert!(err.contains("column 1: `missing` is not defined"), "{err}");
        let err = parse("gpus > 1 and missing > 2")
            .expect("parses")
            .holds(&vars())
            .expect_err("undefined");
        assert!(
            err.contains("column 14") && err.contains("`missing`"),
            "{err}"
        );
        let value = toml::Value::String("dev={{ worker_device }}/{{ gpus + }}".to_owned());
        let err = check_templates(&value).expect_err("broken template");
        assert!(err.contains("column 35: syntax error"), "{err}");
        let value = toml::Value::String("  {{ gpus | frobnicate }}".to_owned());
        let err = render_value(&value, &vars()).expect_err("unknown filter");
        assert!(
            err.contains("column 13") && err.contains("frobnicate"),
            "{err}"
        );
    }

    #[test]
    fn templates_fill_strings_and_keep_types() {
        let vars = vars();
        let render = |text: &str| render_value(&toml::Value::String(text.to_owned()), &vars);
        assert_eq!(render("{{ gpus }}"), Ok(toml::Value::Integer(2)));
        assert_eq!(
            render(" {{ replicas | int }} "),
            Ok(toml::Value::Integer(3))
        );
        assert_eq!(render("{{ enabled }}"), Ok(toml::Value::Boolean(true)));
        assert_eq!(
            render("{{ group_names }}"),
            Ok(toml::Value::Array(vec!["gpu".into(), "lab".into()]))
        );
        assert_eq!(
            render("dev={{ worker_device }}/{{ gpus }}"),
            Ok(toml::Value::String("dev=cuda:0/2".into()))
        );
        assert_eq!(
            render("{{ other | default('cpu') }}"),
            Ok(toml::Value::String("cpu".into()))
        );
        assert_eq!(
            render("tier-{{ tier | lower }}{% if enabled %}-on{% endif %}"),
            Ok(toml::Value::String("tier-fast-on".into()))
        );
        assert_eq!(
            render("no templates {}"),
            Ok(toml::Value::String("no templates {}".into()))
        );
        assert!(render("{{ other }}").is_err_and(|e| e.contains("`other` is not defined")));
        assert!(render("x {{ other }}").is_err_and(|e| e.contains("`other` is not defined")));
        assert!(render("{{ gpus").is_err());
        assert!(render("{{ none }}").is_err_and(|e| e.contains("no value")));
    }
}
