//! The agent's model commands and their words on the command line.
//!
//! `model-list`, `model-get SPEC`, `model-delete SPEC`, `model-download SPEC` (the hub
//! endpoint and token arrive as one JSON line on stdin, never on the command line),
//! `model-has FILE SIZE SHA256`, `model-receive FILE SIZE SHA256` (exactly SIZE bytes
//! follow on stdin).

use rbee_protocol::models::HubAccess;

use crate::error::UsageError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelCommand {
    List,
    Get {
        model: String,
    },
    Delete {
        model: String,
    },
    Download {
        model: String,
        hub: HubAccess,
    },
    Has {
        file: String,
        size: u64,
        sha256: String,
    },
    Receive {
        file: String,
        size: u64,
        sha256: String,
    },
}

impl ModelCommand {
    pub fn to_args(&self) -> Vec<String> {
        let (word, rest): (&str, Vec<String>) = match self {
            ModelCommand::List => ("model-list", vec![]),
            ModelCommand::Get { model } => ("model-get", vec![model.clone()]),
            ModelCommand::Delete { model } => ("model-delete", vec![model.clone()]),
            ModelCommand::Download { model, .. } => ("model-download", vec![model.clone()]),
            ModelCommand::Has { file, size, sha256 } => (
                "model-has",
                vec![file.clone(), size.to_string(), sha256.clone()],
            ),
            ModelCommand::Receive { file, size, sha256 } => (
                "model-receive",
                vec![file.clone(), size.to_string(), sha256.clone()],
            ),
        };
        std::iter::once(word.to_owned()).chain(rest).collect()
    }

    /// Parses `model-*` words; `None` when `name` is no model command.
    pub fn parse(name: &str, rest: &[String]) -> Option<Result<ModelCommand, UsageError>> {
        let usage = |expected: &'static str| UsageError::BadArguments {
            command: name.to_owned(),
            expected,
        };
        let parsed = match (name, rest) {
            ("model-list", []) => Ok(ModelCommand::List),
            ("model-list", _) => Err(usage("no argument")),
            ("model-get", [model]) => Ok(ModelCommand::Get {
                model: model.clone(),
            }),
            ("model-get", _) => Err(usage("MODEL")),
            ("model-delete", [model]) => Ok(ModelCommand::Delete {
                model: model.clone(),
            }),
            ("model-delete", _) => Err(usage("MODEL")),
            ("model-download", [model]) => Ok(ModelCommand::Download {
                model: model.clone(),
                hub: HubAccess::default(),
            }),
            ("model-download", _) => Err(usage("ORG/REPO[:FILE.gguf]")),
            ("model-has" | "model-receive", [file, size, sha256]) => {
                let Ok(size) = size.parse() else {
                    return Some(Err(usage("FILE SIZE SHA256 (SIZE in bytes)")));
                };
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Some(Err(usage("FILE SIZE SHA256 (SHA256 as 64 hex digits)")));
                }
                let (file, sha256) = (file.clone(), sha256.to_ascii_lowercase());
                Ok(if name == "model-has" {
                    ModelCommand::Has { file, size, sha256 }
                } else {
                    ModelCommand::Receive { file, size, sha256 }
                })
            }
            ("model-has" | "model-receive", _) => Err(usage("FILE SIZE SHA256")),
            _ => return None,
        };
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_commands_round_trip_and_bad_arguments_are_named() {
        let sha = "a".repeat(64);
        for command in [
            ModelCommand::List,
            ModelCommand::Get {
                model: "org/repo:m.gguf".to_owned(),
            },
            ModelCommand::Delete {
                model: "m".to_owned(),
            },
            ModelCommand::Download {
                model: "org/repo".to_owned(),
                hub: HubAccess::default(),
            },
            ModelCommand::Has {
                file: "m.gguf".to_owned(),
                size: 7,
                sha256: sha.clone(),
            },
            ModelCommand::Receive {
                file: "m.gguf".to_owned(),
                size: 7,
                sha256: sha.clone(),
            },
        ] {
            let args = command.to_args();
            let parsed = ModelCommand::parse(&args[0], &args[1..]);
            assert_eq!(parsed, Some(Ok(command)));
        }
        let bad: &[&[&str]] = &[
            &["model-get"],
            &["model-list", "x"],
            &["model-receive", "m.gguf", "ten", &sha],
            &["model-receive", "m.gguf", "10", "nothex"],
        ];
        for words in bad {
            let rest: Vec<String> = words[1..].iter().map(|w| (*w).to_owned()).collect();
            assert!(
                matches!(
                    ModelCommand::parse(words[0], &rest),
                    Some(Err(UsageError::BadArguments { .. }))
                ),
                "{words:?}"
            );
        }
        assert_eq!(ModelCommand::parse("status", &[]), None);
    }
}
