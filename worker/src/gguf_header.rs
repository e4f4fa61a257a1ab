//! Walks a GGUF header with every length checked against the file size, so a corrupt
//! file is refused before candle's parser, which trusts lengths, allocates from them.

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
    #[error("cannot read the header: {0}")]
    Io(#[from] std::io::Error),
}

/// ggml tensors have at most four dimensions; a little slack costs nothing.
const MAX_DIMS: u32 = 8;
/// No real tensor has more elements than this (2^48); it keeps sizes far from overflow.
const MAX_ELEMENTS: u64 = 1 << 48;
const MAX_ARRAY_DEPTH: u32 = 4;

/// Checks the header of the GGUF stream `reader` (of `len` bytes), then rewinds it.
pub fn check<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), HeaderError> {
    reader.seek(SeekFrom::Start(0))?;
    let mut walker = Walker {
        reader: &mut *reader,
        pos: 0,
        len,
        wide: true,
    };
    walker.header()?;
    reader.seek(SeekFrom::Start(0))?;
    Ok(())
}

struct Walker<'a, R> {
    reader: &'a mut R,
    pos: u64,
    len: u64,
    /// Version 1 writes counts and lengths as u32, later versions as u64.
    wide: bool,
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
        let tensors = self.count()?;
        let entries = self.count()?;
        // Every entry and tensor consumes bytes, so these loops end at the file's end
        // at the latest, whatever the counts claim.
        for _ in 0..entries {
            self.string()?;
            let ty = self.u32()?;
            self.value(ty, 0)?;
        }
        for _ in 0..tensors {
            self.tensor_info()?;
        }
        Ok(())
    }

    fn tensor_info(&mut self) -> Result<(), HeaderError> {
        let at = self.pos;
        self.string()?;
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
        self.skip(4 + 8)
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
