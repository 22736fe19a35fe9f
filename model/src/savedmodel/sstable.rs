//! A reader for the LevelDB-style table ("SSTable") that TensorFlow writes as a tensor bundle's
//! `variables.index`: data blocks of prefix-compressed key/value entries, an index block
//! pointing at them, and a 48-byte footer. Only uncompressed blocks are supported (TensorFlow
//! writes the bundle index uncompressed). Every offset is bounds-checked.

use super::crc32c;

const FOOTER_LEN: usize = 48;
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const BLOCK_TRAILER_LEN: usize = 5;
/// The decoded entries (keys and values) of a table may take at most this many times its size
/// (or [`MIN_DECODED`]): prefix compression lets a 3-byte entry repeat a whole previous key, and
/// the index block may point at one data block many times, so without a bound a 10 KB table
/// decodes into gigabytes. Real bundle indexes expand by a small factor.
const MAX_EXPANSION: usize = 64;
/// The decoded size always allowed, whatever the table's size.
const MIN_DECODED: usize = 1 << 20;

/// Key/value entries, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The bytes do not form a table.
    #[error("corrupt table: {0}")]
    Corrupt(String),
    /// A block is compressed with a method this reader does not implement.
    #[error("unsupported block compression type {0}")]
    Compression(u8),
}

fn corrupt(why: impl Into<String>) -> TableError {
    TableError::Corrupt(why.into())
}

/// Decodes a varint (at most 64 bits) at `*pos`, advancing it.
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, TableError> {
    let mut result = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or_else(|| corrupt("truncated varint"))?;
        *pos += 1;
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(result);
        }
    }
    Err(corrupt("varint too long"))
}

fn to_usize(v: u64) -> Result<usize, TableError> {
    usize::try_from(v).map_err(|_| corrupt("offset out of range"))
}

/// A block's location in the file.
#[derive(Clone, Copy, Debug)]
struct BlockHandle {
    offset: usize,
    size: usize,
}

impl BlockHandle {
    fn decode(buf: &[u8], pos: &mut usize) -> Result<Self, TableError> {
        let offset = to_usize(varint(buf, pos)?)?;
        let size = to_usize(varint(buf, pos)?)?;
        Ok(BlockHandle { offset, size })
    }
}

/// Reads the block at `handle`, checking its trailer (compression type and masked CRC32C).
fn read_block(file: &[u8], handle: BlockHandle) -> Result<&[u8], TableError> {
    let end = handle
        .offset
        .checked_add(handle.size)
        .ok_or_else(|| corrupt("block handle overflows"))?;
    let trailer_end = end
        .checked_add(BLOCK_TRAILER_LEN)
        .ok_or_else(|| corrupt("block handle overflows"))?;
    if trailer_end > file.len() {
        return Err(corrupt("block extends past the end of the file"));
    }
    let contents = &file[handle.offset..end];
    let kind = file[end];
    let stored = u32::from_le_bytes([file[end + 1], file[end + 2], file[end + 3], file[end + 4]]);
    let actual = crc32c::mask(crc32c::extend(crc32c::crc32c(contents), &[kind]));
    if stored != actual {
        return Err(corrupt("block checksum mismatch"));
    }
    if kind != 0 {
        return Err(TableError::Compression(kind));
    }
    Ok(contents)
}

/// Decodes every entry of a block, taking their sizes from `budget` (the bytes the table may
/// still decode to).
fn block_entries(block: &[u8], budget: &mut usize) -> Result<Entries, TableError> {
    if block.len() < 4 {
        return Err(corrupt("block too short"));
    }
    let n = block.len();
    let num_restarts =
        u32::from_le_bytes([block[n - 4], block[n - 3], block[n - 2], block[n - 1]]) as usize;
    let restarts_len = num_restarts
        .checked_mul(4)
        .and_then(|l| l.checked_add(4))
        .ok_or_else(|| corrupt("bad restart count"))?;
    if restarts_len > n {
        return Err(corrupt("bad restart count"));
    }
    let data = &block[..n - restarts_len];
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let mut key: Vec<u8> = Vec::new();
    while pos < data.len() {
        let shared = to_usize(varint(data, &mut pos)?)?;
        let non_shared = to_usize(varint(data, &mut pos)?)?;
        let value_len = to_usize(varint(data, &mut pos)?)?;
        if shared > key.len() {
            return Err(corrupt("entry shares more than the previous key"));
        }
        let key_end = pos
            .checked_add(non_shared)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| corrupt("entry key past the block"))?;
        let value_end = key_end
            .checked_add(value_len)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| corrupt("entry value past the block"))?;
        key.truncate(shared);
        key.extend_from_slice(&data[pos..key_end]);
        *budget = budget
            .checked_sub(key.len() + (value_end - key_end))
            .ok_or_else(|| corrupt("decoded entries larger than the table allows"))?;
        entries.push((key.clone(), data[key_end..value_end].to_vec()));
        pos = value_end;
    }
    Ok(entries)
}

/// Reads all key/value entries of a table, in key order.
pub fn read_table(file: &[u8]) -> Result<Entries, TableError> {
    if file.len() < FOOTER_LEN {
        return Err(corrupt("shorter than a table footer"));
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&footer[40..48]);
    if u64::from_le_bytes(magic) != MAGIC {
        return Err(corrupt("bad magic number"));
    }
    let mut pos = 0;
    let _metaindex = BlockHandle::decode(&footer[..40], &mut pos)?;
    let index = BlockHandle::decode(&footer[..40], &mut pos)?;
    let mut budget = file.len().saturating_mul(MAX_EXPANSION).max(MIN_DECODED);
    let mut out = Vec::new();
    for (_, handle) in block_entries(read_block(file, index)?, &mut budget)? {
        let mut p = 0;
        let h = BlockHandle::decode(&handle, &mut p)?;
        out.extend(block_entries(read_block(file, h)?, &mut budget)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn block(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        let mut prev: &[u8] = &[];
        for (k, v) in entries {
            let shared = prev
                .iter()
                .zip(k.iter())
                .take_while(|(a, b)| a == b)
                .count();
            put_varint(&mut b, shared as u64);
            put_varint(&mut b, (k.len() - shared) as u64);
            put_varint(&mut b, v.len() as u64);
            b.extend_from_slice(&k[shared..]);
            b.extend_from_slice(v);
            prev = k;
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b
    }

    fn append_block(file: &mut Vec<u8>, contents: &[u8]) -> (usize, usize) {
        let offset = file.len();
        file.extend_from_slice(contents);
        file.push(0);
        let crc = crc32c::mask(crc32c::extend(crc32c::crc32c(contents), &[0]));
        file.extend_from_slice(&crc.to_le_bytes());
        (offset, contents.len())
    }

    /// A table built by this test's own writer (format per the LevelDB table spec).
    fn table() -> Vec<u8> {
        let mut file = Vec::new();
        let data = block(&[
            (b"", b"hdr"),
            (b"dense/bias", b"B"),
            (b"dense/kernel", b"KK"),
        ]);
        let (off, len) = append_block(&mut file, &data);
        let mut handle = Vec::new();
        put_varint(&mut handle, off as u64);
        put_varint(&mut handle, len as u64);
        let index = block(&[(b"e", &handle)]);
        let meta = block(&[]);
        let (moff, mlen) = append_block(&mut file, &meta);
        let (ioff, ilen) = append_block(&mut file, &index);
        let mut footer = Vec::new();
        for v in [moff, mlen, ioff, ilen] {
            put_varint(&mut footer, v as u64);
        }
        footer.resize(40, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        file
    }

    #[test]
    fn reads_entries_with_shared_prefixes() {
        let entries = read_table(&table()).expect("table");
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b""[..], b"dense/bias", b"dense/kernel"]);
        assert_eq!(entries[2].1, b"KK");
    }

    #[test]
    fn corruption_is_an_error_not_a_panic() {
        let t = table();
        for cut in 0..t.len() {
            assert!(read_table(&t[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x5a;
            let _ = read_table(&bad);
        }
    }
}
