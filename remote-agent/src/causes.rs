//! An error with the chain of errors behind it, as one line.

/// `error: cause: cause`, so the operator sees the OS error behind a failed read.
pub fn message_with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
