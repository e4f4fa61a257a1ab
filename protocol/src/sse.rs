//! Server-sent-events framing, shared by every client and server of rbee.
//!
//! The decoder is incremental: feed it bytes as they arrive from the network and it
//! yields whole frames, so a stream is rendered as it arrives, not at its end.

/// One SSE message. Comment lines (keep-alives) are not frames.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

impl SseFrame {
    /// Encodes the frame in wire format, ending with the blank line.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        if !self.event.is_empty() {
            out.push_str("event: ");
            out.push_str(&self.event);
            out.push('\n');
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

/// Incremental decoder of an SSE byte stream.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    current: SseFrame,
    has_data: bool,
}

/// Frames larger than this are a protocol violation, not something to buffer forever.
const MAX_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an SSE line exceeds {MAX_LINE} bytes")]
    LineTooLong,
    #[error("an SSE line is not valid UTF-8")]
    InvalidUtf8,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns every frame they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseFrame>, SseError> {
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
            if let Some(frame) = self.line(&line) {
                frames.push(frame);
            }
        }
        if self.buffer.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        Ok(frames)
    }

    fn line(&mut self, line: &str) -> Option<SseFrame> {
        if line.is_empty() {
            if !self.has_data && self.current.event.is_empty() {
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.current));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}
