//! Walks a GGUF header with every length checked against the file size, so a corrupt
//! file is refused before a parser that trusts lengths (candle's) allocates from them,
//! and reads the few metadata values an operator wants to see in a model catalog.
//!
//! Shared by the worker (which checks a file before loading it) and the hive agent
//! (which lists its models): no dependency beyond the error derive, so the agent
//! stays small.

use std::io::{Read, Seek, SeekFrom};

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("it does not start with the GGUF magic bytes")]
    BadMagic,
    #[error("GGUF version {0} is not supported (1 to 3 are)")]
    UnsupportedVersion(u32),
    #[error("the header claims {needs} more bytes at offset {at}, past the end of the file")]
    PastEnd { at: u64, needs: u64 },
    #[error("unknown metadata value type {ty} at offset {at}")]
    UnknownValueType { ty: u32, at: u64 },
    #[error("metadata arrays are nested too deeply at offset {at}")]
    TooDeep { at: u64 },
    #[error("a tensor at offset {at} claims {dims} dimensions")]
    TooManyDimensions { at: u64, dims: u32 },
    #[error("a tensor at offset {at} claims more elements than any file can hold")]
    TensorTooLarge { at: u64 },
    #[error("a metadata key at offset {at} is longer than any real key")]
    KeyTooLong { at: u64 },
    #[error("cannot read the header: {0}")]
    Io(#[from] std::io::Error),
}

/// ggml tensors have at most four dimensions; a little slack costs nothing.
const MAX_DIMS: u32 = 8;
/// No real tensor has more elements than this (2^48); it keeps sizes far from overflow.
const MAX_ELEMENTS: u64 = 1 << 48;
const MAX_ARRAY_DEPTH: u32 = 4;
/// Skips up to this many bytes are read and dropped rather than seeked over.
const SHORT_SKIP: u64 = 64 * 1024;

/// Longest metadata key or kept string value read into memory; longer keys are
/// refused (no real key comes near), longer values are skipped.
const MAX_KEPT_STRING: u64 = 64 * 1024;

/// What a model catalog shows of a GGUF file, read from its header alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: Option<String>,
    /// `general.name`, as the converter wrote it.
    pub name: Option<String>,
    /// The sum of every tensor's element count.
    pub parameters: u64,
    /// The file type (`general.file_type`) as llama.cpp names it, e.g. `Q4_K_M`.
    pub quantization: Option<String>,
    /// `<architecture>.context_length`.
    pub context_length: Option<u64>,
    /// `<architecture>.block_count`: transformer layers.
    pub block_count: Option<u64>,
    /// `<architecture>.embedding_length`: the hidden size.
    pub embedding_length: Option<u64>,
    /// `<architecture>.attention.head_count`.
    pub head_count: Option<u64>,
    /// `<architecture>.attention.head_count_kv` (grouped-query attention); absent means
    /// as many as `head_count`.
    pub head_count_kv: Option<u64>,
    /// `<architecture>.attention.key_length`: the width of one head where it is not
    /// `embedding_length / head_count` (qwen3).
    pub key_length: Option<u64>,
    /// Elements of `token_embd.weight`, which candle's models dequantise to f32.
    pub token_embedding_elements: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub chat_template: bool,
    pub tensors: u64,
    /// GGUF format version (1 to 3).
    pub version: u32,
}

/// Checks the header of the GGUF stream `reader` (of `len` bytes), then rewinds it.
pub fn check<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), HeaderError> {
    summarize(reader, len).map(drop)
}

/// Checks the header of `reader` (of `len` bytes) as [`check`] does and returns what
/// it says about the model; rewinds the reader.
pub fn summarize<R: Read + Seek>(reader: &mut R, len: u64) -> Result<Summary, HeaderError> {
    reader.seek(SeekFrom::Start(0))?;
    let mut walker = Walker {
        reader: &mut *reader,
        pos: 0,
        len,
        wide: true,
        summary: Summary::default(),
        architecture_numbers: Vec::new(),
        file_type: None,
    };
    walker.header()?;
    let mut summary = walker.summary;
    if let Some(arch) = summary.architecture.clone() {
        let number = |suffix: &str| {
            let key = format!("{arch}.{suffix}");
            walker
                .architecture_numbers
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
        };
        summary.context_length = number("context_length");
        summary.block_count = number("block_count");
        summary.embedding_length = number("embedding_length");
        summary.head_count = number("attention.head_count");
        summary.head_count_kv = number("attention.head_count_kv");
        summary.key_length = number("attention.key_length");
    }
    summary.quantization = walker.file_type.map(file_type_name);
    reader.seek(SeekFrom::Start(0))?;
    Ok(summary)
}

/// The `<architecture>.<suffix>` keys whose integer values [`Summary`] keeps.
fn is_architecture_number(key: &str) -> bool {
    const SUFFIXES: [&str; 6] = [
        ".context_length",
        ".block_count",
        ".embedding_length",
        ".attention.head_count",
        ".attention.head_count_kv",
        ".attention.key_length",
    ];
    SUFFIXES.iter().any(|suffix| key.ends_with(suffix))
}

/// llama.cpp's `llama_ftype` names (the values of `general.file_type`).
fn file_type_name(file_type: u64) -> String {
    let name = match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        other => return format!("file type {other}"),
    };
    name.to_owned()
}

struct Walker<'a, R> {
    reader: &'a mut R,
    pos: u64,
    len: u64,
    /// Version 1 writes counts and lengths as u32, later versions as u64.
    wide: bool,
    summary: Summary,
    /// Every integer `<architecture>.<key>` the summary wants, for whatever
    /// architecture: `general.architecture` may come after them.
    architecture_numbers: Vec<(String, u64)>,
    file_type: Option<u64>,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn header(&mut self) -> Result<(), HeaderError> {
        let mut magic = [0u8; 4];
        self.read(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(HeaderError::BadMagic);
        }
        let version = self.u32()?;
        if !(1..=3).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        self.wide = version >= 2;
        self.summary.version = version;
        let tensors = self.count()?;
        let entries = self.count()?;
        self.summary.tensors = tensors;
        // Every entry and tensor consumes bytes, so these loops end at the file's end
        // at the latest, whatever the counts claim.
        for _ in 0..entries {
            let key = self
                .kept_string()?
                .ok_or(HeaderError::KeyTooLong { at: self.pos })?;
            let ty = self.u32()?;
            self.entry(&key, ty)?;
        }
        for _ in 0..tensors {
            let (name, elements) = self.tensor_info()?;
            self.summary.parameters = self.summary.parameters.saturating_add(elements);
            if name.as_deref() == Some("token_embd.weight") {
                self.summary.token_embedding_elements = Some(elements);
            }
        }
        Ok(())
    }

    /// Reads the value of metadata entry `key`, keeping it when the summary wants it.
    fn entry(&mut self, key: &str, ty: u32) -> Result<(), HeaderError> {
        match (key, ty) {
            ("general.architecture", 8) => self.summary.architecture = self.kept_string()?,
            ("general.name", 8) => self.summary.name = self.kept_string()?,
            ("general.file_type", _) if integer_type(ty) => {
                self.file_type = Some(self.integer(ty)?);
            }
            ("tokenizer.chat_template", _) => {
                self.summary.chat_template = true;
                self.value(ty, 0)?;
            }
            (key, _) if integer_type(ty) && is_architecture_number(key) => {
                let value = self.integer(ty)?;
                self.architecture_numbers.push((key.to_owned(), value));
            }
            _ => self.value(ty, 0)?,
        }
        Ok(())
    }

    /// A string read into memory when at most [`MAX_KEPT_STRING`] long, else skipped.
    fn kept_string(&mut self) -> Result<Option<String>, HeaderError> {
        let len = self.count()?;
        if len > MAX_KEPT_STRING {
            self.skip(len)?;
            return Ok(None);
        }
        self.ensure(len)?;
        let mut bytes = vec![0u8; len as usize];
        self.read(&mut bytes)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// An unsigned or signed integer value of type `ty` (negative values become 0).
    fn integer(&mut self, ty: u32) -> Result<u64, HeaderError> {
        let size = fixed_size(ty).unwrap_or(0) as usize;
        let mut bytes = [0u8; 8];
        self.read(&mut bytes[..size])?;
        let unsigned = u64::from_le_bytes(bytes);
        let signed_negative = matches!(ty, 1 | 3 | 5 | 11) && bytes[size - 1] & 0x80 != 0;
        Ok(if signed_negative { 0 } else { unsigned })
    }

    /// Walks one tensor's description and returns its name (unless absurdly long) and
    /// element count.
    fn tensor_info(&mut self) -> Result<(Option<String>, u64), HeaderError> {
        let at = self.pos;
        let name = self.kept_string()?;
        let dims = self.u32()?;
        if dims > MAX_DIMS {
            return Err(HeaderError::TooManyDimensions { at, dims });
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let dim = self.count()?;
            elements = elements
                .checked_mul(dim)
                .filter(|&n| n <= MAX_ELEMENTS)
                .ok_or(HeaderError::TensorTooLarge { at })?;
        }
        self.skip(4 + 8)?;
        Ok((name, elements))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<(), HeaderError> {
        let at = self.pos;
        if let Some(size) = fixed_size(ty) {
            return self.skip(size);
        }
        match ty {
            8 => self.string(),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(HeaderError::TooDeep { at });
                }
                let item = self.u32()?;
                let count = self.count()?;
                match fixed_size(item) {
                    Some(size) => self.skip(count.saturating_mul(size)),
                    None => {
                        for _ in 0..count {
                            self.value(item, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            _ => Err(HeaderError::UnknownValueType { ty, at }),
        }
    }

    fn string(&mut self) -> Result<(), HeaderError> {
        let len = self.count()?;
        self.skip(len)
    }

    fn count(&mut self) -> Result<u64, HeaderError> {
        if self.wide {
            let mut bytes = [0u8; 8];
            self.read(&mut bytes)?;
            Ok(u64::from_le_bytes(bytes))
        } else {
            self.u32().map(u64::from)
        }
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        let mut bytes = [0u8; 4];
        self.read(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), HeaderError> {
        self.ensure(buf.len() as u64)?;
        self.reader.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        self.ensure(n)?;
        // A header is mostly short strings (a vocabulary holds tens of thousands): read
        // past them through the caller's buffer instead of one seek, which empties a
        // `BufReader`, per string.
        if n <= SHORT_SKIP {
            let skipped = std::io::copy(&mut (&mut *self.reader).take(n), &mut std::io::sink())?;
            if skipped != n {
                return Err(HeaderError::PastEnd {
                    at: self.pos + skipped,
                    needs: n - skipped,
                });
            }
            self.pos += n;
            return Ok(());
        }
        let step = i64::try_from(n).map_err(|_| HeaderError::PastEnd {
            at: self.pos,
            needs: n,
        })?;
        self.reader.seek(SeekFrom::Current(step))?;
        self.pos += n;
        Ok(())
    }

    fn ensure(&self, n: u64) -> Result<(), HeaderError> {
        if self.len.saturating_sub(self.pos) < n {
            return Err(HeaderError::PastEnd {
                at: self.pos,
                needs: n,
            });
        }
        Ok(())
    }
}

/// Whether `ty` is one of GGUF's integer value types (u8 to i64).
fn integer_type(ty: u32) -> bool {
    matches!(ty, 0..=5 | 10 | 11)
}

/// The size of a scalar metadata value type, or `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(kv_key_len: u64) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(kv_key_len.to_le_bytes());
        bytes.extend(b"general.architecture");
        bytes.extend(8u32.to_le_bytes());
        bytes.extend(5u64.to_le_bytes());
        bytes.extend(b"llama");
        bytes
    }

    fn check_bytes(bytes: Vec<u8>) -> Result<(), HeaderError> {
        let len = bytes.len() as u64;
        check(&mut Cursor::new(bytes), len)
    }

    #[test]
    fn a_well_formed_header_passes() {
        check_bytes(header(20)).expect("valid");
    }

    #[test]
    fn a_huge_string_length_is_refused_without_allocating() {
        let err = check_bytes(header(u64::MAX / 2)).expect_err("must fail");
        assert!(matches!(err, HeaderError::PastEnd { at: 32, .. }), "{err}");
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        let mut bytes = header(20);
        bytes[0] = b'X';
        assert!(matches!(check_bytes(bytes), Err(HeaderError::BadMagic)));
        let mut bytes = header(20);
        bytes[4] = 9;
        assert!(matches!(
            check_bytes(bytes),
            Err(HeaderError::UnsupportedVersion(9))
        ));
    }

    fn string(bytes: &mut Vec<u8>, text: &str) {
        bytes.extend((text.len() as u64).to_le_bytes());
        bytes.extend(text.as_bytes());
    }

    #[test]
    fn the_summary_names_architecture_size_quantization_context_and_template() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(2u64.to_le_bytes());
        bytes.extend(8u64.to_le_bytes());
        // Another architecture's numbers are not this model's.
        string(&mut bytes, "bert.block_count");
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(99u32.to_le_bytes());
        string(&mut bytes, "llama.block_count");
        bytes.extend(10u32.to_le_bytes());
        bytes.extend(30u64.to_le_bytes());
        string(&mut bytes, "llama.attention.head_count_kv");
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(3u32.to_le_bytes());
        // The context length comes before the architecture that names its key.
        string(&mut bytes, "llama.context_length");
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(2048u32.to_le_bytes());
        string(&mut bytes, "general.architecture");
        bytes.extend(8u32.to_le_bytes());
        string(&mut bytes, "llama");
        string(&mut bytes, "general.file_type");
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(15u32.to_le_bytes());
        string(&mut bytes, "tokenizer.chat_template");
        bytes.extend(8u32.to_le_bytes());
        string(&mut bytes, "{{ messages }}");
        string(&mut bytes, "general.name");
        bytes.extend(8u32.to_le_bytes());
        string(&mut bytes, "Tiny");
        for (name, dims) in [("token_embd.weight", [4u64, 8]), ("b", [3, 5])] {
            string(&mut bytes, name);
            bytes.extend(2u32.to_le_bytes());
            for dim in dims {
                bytes.extend(dim.to_le_bytes());
            }
            bytes.extend(0u32.to_le_bytes());
            bytes.extend(0u64.to_le_bytes());
        }
        let len = bytes.len() as u64;
        let summary = summarize(&mut Cursor::new(bytes), len).expect("valid");
        assert_eq!(
            summary,
            Summary {
                architecture: Some("llama".to_owned()),
                name: Some("Tiny".to_owned()),
                parameters: 32 + 15,
                quantization: Some("Q4_K_M".to_owned()),
                context_length: Some(2048),
                block_count: Some(30),
                embedding_length: None,
                head_count: None,
                head_count_kv: Some(3),
                key_length: None,
                token_embedding_elements: Some(32),
                chat_template: true,
                tensors: 2,
                version: 3,
            }
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_at_every_cut() {
        let bytes = header(20);
        for cut in 0..bytes.len() {
            let err = check_bytes(bytes[..cut].to_vec()).expect_err("truncated");
            assert!(
                matches!(err, HeaderError::PastEnd { .. } | HeaderError::BadMagic),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn unknown_value_types_are_refused() {
        let mut bytes = header(20);
        let ty_at = 4 + 4 + 8 + 8 + 8 + 20;
        bytes[ty_at] = 77;
        assert!(matches!(
            check_bytes(bytes),
            Err(HeaderError::UnknownValueType { ty: 77, .. })
        ));
    }
}
