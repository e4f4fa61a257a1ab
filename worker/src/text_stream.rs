//! Turns generated token bytes into text pieces: never splits a UTF-8 character and
//! never shows any part of a stop sequence.

/// What a new token produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text safe to send now (may be empty while bytes or a possible stop are held).
    Text(String),
    /// A stop sequence appeared; this is the text before it, and generation ends.
    Stopped(String),
}

pub struct TextStream {
    stops: Vec<String>,
    /// Bytes of a character whose remaining bytes have not been generated yet.
    partial: Vec<u8>,
    /// Decoded text that might be the start of a stop sequence.
    held: String,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            partial: Vec::new(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Piece {
        self.partial.extend_from_slice(bytes);
        let mut rest: &[u8] = &self.partial;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.held.push_str(text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // from_utf8 checked these bytes, so this cannot fail.
                    self.held
                        .push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for its next bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(bad) => {
                            self.held.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
        self.partial = rest.to_vec();

        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return Piece::Stopped(before);
        }
        let hold = self.possible_stop_start();
        let ready = self.held[..hold].to_owned();
        self.held.drain(..hold);
        Piece::Text(ready)
    }

    /// Everything still held back, once generation has ended without a stop sequence.
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&String::from_utf8_lossy(&self.partial));
        self.partial.clear();
        text
    }

    /// The byte index where the longest suffix of `held` that begins a stop sequence
    /// starts (the length of `held` when there is none).
    fn possible_stop_start(&self) -> usize {
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(suffix))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Piece {
        Piece::Text(s.to_owned())
    }

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut stream = TextStream::new(vec![]);
        let smile = "😀".as_bytes();
        assert_eq!(stream.push(&smile[..2]), text(""));
        assert_eq!(stream.push(&smile[2..]), text("😀"));
        assert_eq!(stream.push("é!".as_bytes()), text("é!"));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = TextStream::new(vec![]);
        assert_eq!(stream.push(&[b'a', 0xFF, b'b']), text("a\u{FFFD}b"));
    }

    #[test]
    fn stop_sequences_are_cut_even_across_tokens() {
        let mut stream = TextStream::new(vec!["\n\n".into(), "END".into()]);
        assert_eq!(stream.push(b"one E"), text("one "));
        assert_eq!(stream.push(b"N"), text(""));
        assert_eq!(stream.push(b"D two"), Piece::Stopped(String::new()));
    }

    #[test]
    fn a_false_start_of_a_stop_is_released() {
        let mut stream = TextStream::new(vec!["END".into()]);
        assert_eq!(stream.push(b"EN"), text(""));
        assert_eq!(stream.push(b"x"), text("ENx"));
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn finish_flushes_held_text() {
        let mut stream = TextStream::new(vec!["STOP".into()]);
        assert_eq!(stream.push(b"a ST"), text("a "));
        assert_eq!(stream.finish(), "ST");
    }
}
