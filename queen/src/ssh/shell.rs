//! Quoting for the remote POSIX shell: every argument the queen sends over SSH goes
//! through here, so no alias, path or model id is ever interpreted by the shell.

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

/// A command line of quoted words.
pub fn command<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    let mut line = quote_path(program);
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg.as_ref()));
    }
    line
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
            command("~/.rbee/bin/rbee-hive", &["--hive-id", "a b"]),
            "\"$HOME\"/.rbee/bin/rbee-hive --hive-id 'a b'"
        );
    }
}
