//! The small expression language of `when` conditions and `{{ }}` templates.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | test
//! test    := operand [ ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand
//!                    | "is" ["not"] ("defined" | "undefined") ]
//! operand := literal | NAME ["|" "default" "(" literal ")"] | "(" expr ")" | "[" literal,* "]"
//! ```
//!
//! Literals are quoted strings ('…' or "…"), integers, and `true`/`false`. A name that
//! is not defined is an error unless it is tested with `is defined` or has a default.

use std::cmp::Ordering;

/// A parsed `when` condition; [`Condition::holds`] evaluates it against a hive's vars.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    expr: Expr,
}

impl Condition {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn holds(&self, vars: &toml::Table) -> Result<bool, String> {
        let value = eval(&self.expr, vars).map_err(|e| format!("when {:?}: {e}", self.text))?;
        Ok(truthy(&value))
    }
}

/// Parses a `when` condition.
pub fn parse(text: &str) -> Result<Condition, String> {
    let expr = parse_expr(text).map_err(|e| format!("when {text:?}: {e}"))?;
    Ok(Condition {
        text: text.to_owned(),
        expr,
    })
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
    let trimmed = text.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        let value = eval(&parse_expr(inner)?, vars)?;
        return to_toml(value);
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{text:?} opens a template with {{{{ but never closes it"))?;
        let value = eval(&parse_expr(&after[..end])?, vars)?;
        out.push_str(&display(&value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(toml::Value::String(out))
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Value>),
    Other(String),
}

fn from_toml(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::Str(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => Value::List(items.iter().map(from_toml).collect()),
        other => Value::Other(other.to_string()),
    }
}

fn to_toml(value: Value) -> Result<toml::Value, String> {
    Ok(match value {
        Value::Str(s) | Value::Other(s) => toml::Value::String(s),
        Value::Int(i) => toml::Value::Integer(i),
        Value::Float(f) => toml::Value::Float(f),
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::List(items) => {
            toml::Value::Array(items.into_iter().map(to_toml).collect::<Result<_, _>>()?)
        }
    })
}

fn display(value: &Value) -> String {
    match value {
        Value::Str(s) | Value::Other(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => format!(
            "[{}]",
            items.iter().map(display).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Str(s) => {
            !s.is_empty() && !matches!(s.to_ascii_lowercase().as_str(), "false" | "no" | "0")
        }
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Bool(b) => *b,
        Value::List(items) => !items.is_empty(),
        Value::Other(_) => true,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    List(Vec<Expr>),
    Var {
        name: String,
        default: Option<Box<Expr>>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Op, Box<Expr>),
    Defined {
        name: String,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

fn eval(expr: &Expr, vars: &toml::Table) -> Result<Value, String> {
    Ok(match expr {
        Expr::Literal(v) => v.clone(),
        Expr::List(items) => Value::List(
            items
                .iter()
                .map(|e| eval(e, vars))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Var { name, default } => match (vars.get(name), default) {
            (Some(value), _) => from_toml(value),
            (None, Some(default)) => eval(default, vars)?,
            (None, None) => {
                return Err(format!(
                    "`{name}` is not defined (test it with `{name} is defined`, or give a default: `{name} | default(...)`)"
                ));
            }
        },
        Expr::Not(inner) => Value::Bool(!truthy(&eval(inner, vars)?)),
        Expr::And(a, b) => Value::Bool(truthy(&eval(a, vars)?) && truthy(&eval(b, vars)?)),
        Expr::Or(a, b) => Value::Bool(truthy(&eval(a, vars)?) || truthy(&eval(b, vars)?)),
        Expr::Defined { name, negated } => Value::Bool(vars.contains_key(name) != *negated),
        Expr::Compare(a, op, b) => {
            let (a, b) = (eval(a, vars)?, eval(b, vars)?);
            Value::Bool(match op {
                Op::Eq => equal(&a, &b),
                Op::Ne => !equal(&a, &b),
                Op::In | Op::NotIn => {
                    let found = match &b {
                        Value::List(items) => items.iter().any(|i| equal(i, &a)),
                        Value::Str(s) => s.contains(&display(&a)),
                        other => {
                            return Err(format!("cannot look for a value in {}", display(other)));
                        }
                    };
                    found == (*op == Op::In)
                }
                ordering => {
                    let ord = order(&a, &b).ok_or_else(|| {
                        format!("cannot order {} and {}", display(&a), display(&b))
                    })?;
                    match ordering {
                        Op::Lt => ord == Ordering::Less,
                        Op::Le => ord != Ordering::Greater,
                        Op::Gt => ord == Ordering::Greater,
                        _ => ord != Ordering::Less,
                    }
                }
            })
        }
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => match (a, b) {
            (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
            _ => None,
        },
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Str(String),
    Int(i64),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or_else(|| format!("unclosed quote {c}"))?;
            tokens.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            tokens.push(Token::Int(
                digits
                    .parse()
                    .map_err(|_| format!("number {digits} is out of range"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Name(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = ["==", "!=", "<=", ">="]
                .into_iter()
                .find(|s| *s == two)
                .or_else(|| {
                    ["<", ">", "(", ")", "[", "]", ",", "|"]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                })
                .ok_or_else(|| format!("unexpected character {c:?}"))?;
            i += sym.len();
            tokens.push(Token::Sym(sym));
        }
    }
    Ok(tokens)
}

fn parse_expr(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("the expression is empty".to_owned());
    }
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(format!(
            "unexpected {} after a complete expression",
            show(token)
        )),
    }
}

fn show(token: &Token) -> String {
    match token {
        Token::Name(n) => format!("`{n}`"),
        Token::Str(s) => format!("{s:?}"),
        Token::Int(i) => i.to_string(),
        Token::Sym(s) => format!("`{s}`"),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_name(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Token::Name(n)) if n == name)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), String> {
        match self.next() {
            Some(Token::Sym(s)) if s == sym => Ok(()),
            Some(other) => Err(format!("expected `{sym}`, found {}", show(&other))),
            None => Err(format!("expected `{sym}` at the end")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_name("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.peek_name("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek_name("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.test()
    }

    fn test(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        if self.peek_name("is") {
            self.at += 1;
            let mut negated = false;
            if self.peek_name("not") {
                self.at += 1;
                negated = true;
            }
            let name = match &left {
                Expr::Var {
                    name,
                    default: None,
                } => name.clone(),
                _ => return Err("only a variable name can be tested with `is defined`".to_owned()),
            };
            match self.next() {
                Some(Token::Name(n)) if n == "defined" => {}
                Some(Token::Name(n)) if n == "undefined" => negated = !negated,
                _ => return Err("`is` must be followed by `defined` or `undefined`".to_owned()),
            }
            return Ok(Expr::Defined { name, negated });
        }
        let op = match self.peek() {
            Some(Token::Sym("==")) => Op::Eq,
            Some(Token::Sym("!=")) => Op::Ne,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            Some(Token::Name(n)) if n == "in" => Op::In,
            Some(Token::Name(n))
                if n == "not"
                    && matches!(self.tokens.get(self.at + 1), Some(Token::Name(m)) if m == "in") =>
            {
                self.at += 1;
                Op::NotIn
            }
            _ => return Ok(left),
        };
        self.at += 1;
        let right = self.operand()?;
        Ok(Expr::Compare(Box::new(left), op, Box::new(right)))
    }

    fn operand(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Expr::Literal(Value::Str(s))),
            Some(Token::Int(i)) => Ok(Expr::Literal(Value::Int(i))),
            Some(Token::Name(n)) if n == "true" || n == "True" => {
                Ok(Expr::Literal(Value::Bool(true)))
            }
            Some(Token::Name(n)) if n == "false" || n == "False" => {
                Ok(Expr::Literal(Value::Bool(false)))
            }
            Some(Token::Name(n)) if ["and", "or", "not", "in", "is"].contains(&n.as_str()) => {
                Err(format!("expected a value, found `{n}`"))
            }
            Some(Token::Name(name)) => {
                let mut default = None;
                if self.peek() == Some(&Token::Sym("|")) {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Name(f)) if f == "default" || f == "d" => {}
                        Some(other) => {
                            return Err(format!(
                                "unknown filter {}; only `default` is supported",
                                show(&other)
                            ));
                        }
                        None => return Err("a filter name must follow `|`".to_owned()),
                    }
                    self.expect("(")?;
                    default = Some(Box::new(self.or()?));
                    self.expect(")")?;
                }
                Ok(Expr::Var { name, default })
            }
            Some(Token::Sym("(")) => {
                let inner = self.or()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Sym("[")) => {
                let mut items = Vec::new();
                if self.peek() == Some(&Token::Sym("]")) {
                    self.at += 1;
                    return Ok(Expr::List(items));
                }
                loop {
                    items.push(self.or()?);
                    match self.next() {
                        Some(Token::Sym(",")) => continue,
                        Some(Token::Sym("]")) => return Ok(Expr::List(items)),
                        _ => {
                            return Err(
                                "a list needs `,` between items and a closing `]`".to_owned()
                            );
                        }
                    }
                }
            }
            Some(other) => Err(format!("expected a value, found {}", show(&other))),
            None => Err("the expression ends where a value was expected".to_owned()),
        }
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
            ("not (enabled and gpus == 1)", true),
            ("worker_device in ['cpu', 'cuda:0']", true),
            ("'cuda' in worker_device", true),
        ];
        for (text, expected) in cases {
            let condition = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(condition.holds(&vars()), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_conditions_are_errors_not_false() {
        for text in [
            "",
            "a ==",
            "a = b",
            "(a",
            "'open",
            "a | upper",
            "1 is defined",
        ] {
            assert!(parse(text).is_err(), "{text:?} should not parse");
        }
        let undefined = parse("missing == 1").expect("parses").holds(&vars());
        assert!(undefined.is_err_and(|e| e.contains("missing") && e.contains("default")));
    }

    #[test]
    fn templates_fill_strings_and_keep_types() {
        let vars = vars();
        let render = |text: &str| render_value(&toml::Value::String(text.to_owned()), &vars);
        assert_eq!(render("{{ gpus }}"), Ok(toml::Value::Integer(2)));
        assert_eq!(
            render("dev={{ worker_device }}/{{ gpus }}"),
            Ok(toml::Value::String("dev=cuda:0/2".into()))
        );
        assert_eq!(
            render("{{ other | default('cpu') }}"),
            Ok(toml::Value::String("cpu".into()))
        );
        assert_eq!(
            render("no templates"),
            Ok(toml::Value::String("no templates".into()))
        );
        assert!(render("{{ other }}").is_err());
        assert!(render("{{ gpus").is_err());
    }
}
