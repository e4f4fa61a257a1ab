//! Validation of names that end up in file paths and remote command lines.

/// Hive aliases, group names and worker ids: ASCII letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit, at most 64 characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Model ids: a Hugging Face repo (`owner/name`), optionally `:file.gguf`; or a bare
/// file name already in a hive's cache. No `..`, no absolute paths, no shell or
/// control characters.
pub fn is_valid_model_id(id: &str) -> bool {
    if id.is_empty() || id.len() > 256 || id.starts_with('/') || id.contains("..") {
        return false;
    }
    let (repo, file) = match id.split_once(':') {
        Some((repo, file)) => (repo, Some(file)),
        None => (id, None),
    };
    let part_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let repo_ok = repo.split('/').count() <= 2 && repo.split('/').all(part_ok);
    let file_ok = file.is_none_or(|f| f.split('/').all(part_ok));
    repo_ok && file_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["gpu-a", "localhost", "hive_1", "a.b", "0node"] {
            assert!(is_valid_name(ok), "{ok} should be valid");
        }
        for bad in ["", "-x", "a b", "a;rm", "a/b", "$(x)", &"a".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn model_ids() {
        for ok in [
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "TheBloke/Llama-2-7B-GGUF:llama-2-7b.Q4_K_M.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "org/repo:sub/dir/file.gguf",
        ] {
            assert!(is_valid_model_id(ok), "{ok} should be valid");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a/b/c",
            "a b",
            "a;b",
            "a:",
            "x'y",
            "a\nb",
        ] {
            assert!(!is_valid_model_id(bad), "{bad:?} should be invalid");
        }
    }
}
