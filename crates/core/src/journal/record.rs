//! On-disk record format and journal positions.
//!
//! A record is a 16-byte header followed by the payload (all little endian):
//!
//! ```text
//! 0..4   MAGIC          sync marker: recovery searches for it after a corrupt record
//! 4..8   payload length u32
//! 8..12  payload CRC32
//! 12..16 header CRC32   over (position u64, bytes 0..12)
//! ```
//!
//! The header has its own CRC so a corrupt length is detected from 16 bytes,
//! without reading (or buffering) the megabytes it may claim; that keeps
//! resynchronisation linear. Mixing the record's position into that CRC means a
//! record is only valid at the exact place it was written: a payload that happens
//! to contain an encoded record, or a segment file renamed by hand, cannot pass
//! for a real record.

/// Sync marker that starts every record (chosen to be rare in BSON and text).
pub const MAGIC: [u8; 4] = [0xD5, 0x1A, 0x6E, 0xA7];
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Largest byte offset inside a segment: positions keep the offset in 32 bits.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// Position of byte `offset` of segment `segment`: ordered like (segment, offset).
pub fn position(segment: u64, offset: u64) -> u64 {
    (segment << 32) | offset
}

/// Segment number of a position.
pub fn segment_of(pos: u64) -> u64 {
    pos >> 32
}

/// Byte offset inside its segment of a position.
pub fn offset_of(pos: u64) -> u64 {
    pos & 0xFFFF_FFFF
}

/// On-disk size of a record holding `payload_len` bytes.
pub fn record_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + payload_len as u64
}

/// Appends the record for `payload`, to be written at position `pos`, to `out`.
/// The caller guarantees `payload.len() <= u32::MAX` (a segment cannot hold more).
pub fn encode_into(out: &mut Vec<u8>, pos: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let hcrc = header_crc(pos, &out[start..start + 12]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
}

fn header_crc(pos: u64, first12: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&pos.to_le_bytes());
    h.update(first12);
    h.finalize()
}

/// A record header that passed its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub payload_crc: u32,
}

/// Why bytes are not a valid record. `as_str` is the reason shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header remain before the end of the segment.
    TruncatedHeader,
    BadMagic,
    BadHeaderCrc,
    /// The header is valid but the payload runs past the end of the segment.
    TruncatedPayload,
    BadPayloadCrc,
}

impl DecodeError {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::TruncatedHeader => "truncated record header",
            DecodeError::BadMagic => "bad record marker",
            DecodeError::BadHeaderCrc => "record header checksum mismatch",
            DecodeError::TruncatedPayload => "record payload truncated",
            DecodeError::BadPayloadCrc => "record payload checksum mismatch",
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the header at the start of `buf` as if it were at position `pos`.
pub fn decode_header(buf: &[u8], pos: u64) -> Result<Header, DecodeError> {
    let h: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::TruncatedHeader)?;
    if h[0..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if header_crc(pos, &h[..12]) != word(12) {
        return Err(DecodeError::BadHeaderCrc);
    }
    Ok(Header {
        len: word(4),
        payload_crc: word(8),
    })
}

/// Decodes the whole record at the start of `buf` (which holds everything up
/// to the end of the segment, or more) and returns its payload.
pub fn decode(buf: &[u8], pos: u64) -> Result<&[u8], DecodeError> {
    let h = decode_header(buf, pos)?;
    let payload = buf
        .get(HEADER_LEN..HEADER_LEN + h.len as usize)
        .ok_or(DecodeError::TruncatedPayload)?;
    check_payload(&h, payload)?;
    Ok(payload)
}

/// Checks a payload against its (already validated) header.
pub fn check_payload(h: &Header, payload: &[u8]) -> Result<(), DecodeError> {
    if crc32fast::hash(payload) == h.payload_crc {
        Ok(())
    } else {
        Err(DecodeError::BadPayloadCrc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_position_binding() {
        let pos = position(7, 1234);
        let mut buf = Vec::new();
        encode_into(&mut buf, pos, b"hello");
        assert_eq!(buf.len() as u64, record_len(5));
        assert_eq!(decode(&buf, pos), Ok(&b"hello"[..]));
        // The same bytes are not a record anywhere else.
        assert_eq!(decode(&buf, pos + 1), Err(DecodeError::BadHeaderCrc));
        assert_eq!(
            decode(&buf[..buf.len() - 1], pos),
            Err(DecodeError::TruncatedPayload)
        );
        assert_eq!(decode(&buf[..15], pos), Err(DecodeError::TruncatedHeader));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let pos = position(1, 0);
        let mut buf = Vec::new();
        encode_into(&mut buf, pos, b"some payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b, pos).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn position_parts() {
        let p = position(3, 99);
        assert_eq!((segment_of(p), offset_of(p)), (3, 99));
        assert!(position(3, MAX_SEGMENT_BYTES) < position(4, 0));
    }
}
