//! Quoting for the remote POSIX shell: every argument the queen sends over SSH goes
//! through here, so no alias, path or model id is ever interpreted by the shell.
//!
//! The SSH layer runs only a [`Line`], and a `Line` is made only by [`command`] (quoted
//! words) or [`script`] (static text after quoted variable assignments): a value that
//! skips quoting is a compile error, not a review finding.

/// Quotes `arg` as one shell word.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
        });
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Quotes a remote path, letting a leading `~/` expand to the remote user's home.
pub fn quote_path(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some("") => "\"$HOME\"".to_owned(),
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None if path == "~" => "\"$HOME\"".to_owned(),
        None => quote(path),
    }
}

/// Joins a remote directory and a file name without touching `~`.
pub fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// A command line for the remote shell, made only of quoted words and static text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line(String);

impl Line {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command line of quoted words.
pub fn command<S: AsRef<str>>(program: &str, args: &[S]) -> Line {
    let mut line = quote_path(program);
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg.as_ref()));
    }
    Line(line)
}

/// A value a [`script`] reads from a shell variable.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Any text, as one word.
    Word(&'a str),
    /// A remote path, whose leading `~/` is the remote user's home.
    Path(&'a str),
}

/// `body`, a fixed script, run after assigning each value to its variable, quoted
/// (`d="$HOME"/.rbee; n=rbee-hive; body`). The body reads the values as `"$d"`.
pub fn script(vars: &[(&'static str, Value<'_>)], body: &'static str) -> Line {
    let mut line = String::new();
    for (name, value) in vars {
        debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let value = match value {
            Value::Word(word) => quote(word),
            Value::Path(path) => quote_path(path),
        };
        line.push_str(&format!("{name}={value}; "));
    }
    line.push_str(body);
    Line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_survive_the_shell() {
        let cases = [
            ("plain-word_1.0", "plain-word_1.0"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
            ("`x`;y|z&", "'`x`;y|z&'"),
            ("a\nb", "'a\nb'"),
            ("~/x", "'~/x'"),
        ];
        for (input, expected) in cases {
            assert_eq!(quote(input), expected, "{input:?}");
        }
    }

    #[test]
    fn quoted_words_round_trip_through_sh() {
        for word in [
            "a b",
            "it's",
            "$(echo pwned)",
            "`id`",
            "a\"b",
            "x\\y",
            "*",
            "-n",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{word:?}");
        }
    }

    #[test]
    fn paths_keep_home_expansion_only() {
        assert_eq!(quote_path("~/.rbee/bin"), "\"$HOME\"/.rbee/bin");
        assert_eq!(quote_path("/opt/my rbee"), "'/opt/my rbee'");
        assert_eq!(
            command("~/.rbee/bin/rbee-hive", &["--hive-id", "a b"]).as_str(),
            "\"$HOME\"/.rbee/bin/rbee-hive --hive-id 'a b'"
        );
    }

    #[test]
    fn script_values_reach_the_body_as_they_were() {
        let line = script(
            &[
                ("w", Value::Word("it's $(echo pwned) `id` a\"b")),
                ("p", Value::Path("~/my dir")),
            ],
            "printf '%s|%s' \"$w\" \"$p\"",
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(line.as_str())
            .env("HOME", "/home/x")
            .output()
            .expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's $(echo pwned) `id` a\"b|/home/x/my dir"
        );
    }
}
