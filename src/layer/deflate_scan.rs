//! Finding where the final block of a raw deflate stream starts and where the stream ends, to
//! the bit, without inflating it: the Huffman codes are decoded only to skip over them.
//!
//! libdeflate compresses a whole buffer into a complete deflate stream whose last block has the
//! BFINAL bit set and ends at an arbitrary bit. To chain such streams into one (see
//! `compress`), that bit is cleared and an empty stored block is placed right after the end,
//! which brings the next stream onto a byte boundary — what zlib's sync flush writes.

/// Bit positions in a raw deflate stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// The first bit (BFINAL) of the final block's header.
    pub last_block: u64,
    /// The bit just after the final block's end-of-block code.
    pub end: u64,
}

/// Scan a complete raw deflate stream. `None` if it is not valid deflate (never the case for
/// what a compressor wrote).
pub fn scan(data: &[u8]) -> Option<Ends> {
    let mut r = Bits::new(data);
    let mut lit = Table::default();
    let mut dist = Table::default();
    loop {
        let block = r.position();
        r.refill();
        let last = r.take(1)? == 1;
        match r.take(2)? {
            0 => {
                r.align();
                let len = r.take(16)?;
                if len != !r.take(16)? & 0xffff {
                    return None;
                }
                r.skip_bytes(len as usize)?;
            }
            1 => {
                lit.build(&FIXED_LIT, true)?;
                dist.build(&[5; 30], false)?;
                skip_codes(&mut r, &lit, &dist)?;
            }
            2 => {
                read_dynamic(&mut r, &mut lit, &mut dist)?;
                skip_codes(&mut r, &lit, &dist)?;
            }
            _ => return None,
        }
        if last {
            let end = r.position();
            return (end <= data.len() as u64 * 8).then_some(Ends {
                last_block: block,
                end,
            });
        }
    }
}

/// Code lengths of the fixed literal/length code.
const FIXED_LIT: [u8; 288] = {
    let mut l = [8u8; 288];
    let mut i = 144;
    while i < 256 {
        l[i] = 9;
        i += 1;
    }
    while i < 280 {
        l[i] = 7;
        i += 1;
    }
    l
};
/// Extra bits after length symbols 257..=285.
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Extra bits after distance symbols 0..=29.
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Order of the code length code lengths in a dynamic block header.
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Bits resolved by one table lookup; longer codes take the slow path.
const FAST: u32 = 10;

/// A canonical Huffman code. `fast[bits]` is `(bits to skip) << 9 | symbol` for codes of at
/// most `FAST` bits, where the bits to skip include a length or distance symbol's extra bits;
/// 0 means a longer code.
struct Table {
    fast: [u16; 1 << FAST],
    /// Codes per length, and symbols ordered by (length, symbol): the slow path.
    count: [u16; 16],
    sorted: [u16; 288],
    /// Extra bits per symbol (the literal/length code: length symbols; distance code: all).
    extra_lit: bool,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            fast: [0; 1 << FAST],
            count: [0; 16],
            sorted: [0; 288],
            extra_lit: false,
        }
    }
}

impl Table {
    fn extra(&self, sym: u16) -> u32 {
        let s = sym as usize;
        if self.extra_lit {
            if s > 256 {
                LEN_EXTRA.get(s - 257).map_or(0, |&e| u32::from(e))
            } else {
                0
            }
        } else {
            DIST_EXTRA.get(s).map_or(0, |&e| u32::from(e))
        }
    }

    /// Build from code lengths (0: unused). Over-subscribed codes are refused; incomplete ones
    /// (a single distance code) are allowed, as in zlib.
    fn build(&mut self, lengths: &[u8], extra_lit: bool) -> Option<()> {
        self.extra_lit = extra_lit;
        self.count = [0; 16];
        for &l in lengths {
            self.count[l as usize] += 1;
        }
        self.count[0] = 0;
        let mut left: i32 = 1;
        for len in 1..16 {
            left = (left << 1) - i32::from(self.count[len]);
            if left < 0 {
                return None;
            }
        }
        let mut offs = [0u16; 16];
        let mut next = [0u32; 16];
        let mut code = 0u32;
        for len in 1..16 {
            offs[len] = if len == 1 {
                0
            } else {
                offs[len - 1] + self.count[len - 1]
            };
            code = (code + u32::from(self.count[len - 1])) << 1;
            next[len] = code;
        }
        self.fast = [0; 1 << FAST];
        for (sym, &len) in lengths.iter().enumerate() {
            if len == 0 {
                continue;
            }
            let len = u32::from(len);
            self.sorted[offs[len as usize] as usize] = sym as u16;
            offs[len as usize] += 1;
            let c = next[len as usize];
            next[len as usize] += 1;
            if len <= FAST {
                let skip = len + self.extra(sym as u16);
                let entry = (skip << 9) as u16 | sym as u16;
                let rev = c.reverse_bits() >> (32 - len);
                let mut i = rev as usize;
                while i < 1 << FAST {
                    self.fast[i] = entry;
                    i += 1 << len;
                }
            }
        }
        Some(())
    }

    /// The next symbol and the bits it takes (code and extra bits), from at least 48 buffered
    /// bits (or all that is left).
    #[inline(always)]
    fn decode(&self, bits: u64) -> Option<(u16, u32)> {
        let e = self.fast[(bits & ((1 << FAST) - 1)) as usize];
        if e != 0 {
            return Some((e & 0x1ff, u32::from(e >> 9)));
        }
        self.decode_long(bits)
    }

    /// Canonical decoding, one bit at a time: codes longer than `FAST` bits are rare.
    #[cold]
    fn decode_long(&self, bits: u64) -> Option<(u16, u32)> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= ((bits >> (len - 1)) & 1) as i32;
            let count = i32::from(self.count[len]);
            if code - first < count {
                let sym = self.sorted[(index + code - first) as usize];
                return Some((sym, len as u32 + self.extra(sym)));
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        None
    }
}

/// Skip the compressed data of a block, through its end-of-block code.
fn skip_codes(r: &mut Bits, lit: &Table, dist: &Table) -> Option<()> {
    loop {
        r.refill();
        let (sym, n) = lit.decode(r.peek())?;
        r.consume(n)?;
        if sym < 256 {
            continue;
        }
        if sym == 256 {
            return Some(());
        }
        if sym > 285 {
            return None;
        }
        let (d, n) = dist.decode(r.peek())?;
        if d > 29 {
            return None;
        }
        r.consume(n)?;
    }
}

/// Read a dynamic block's header: its two codes.
fn read_dynamic(r: &mut Bits, lit: &mut Table, dist: &mut Table) -> Option<()> {
    r.refill();
    let nlit = r.take(5)? as usize + 257;
    let ndist = r.take(5)? as usize + 1;
    let ncl = r.take(4)? as usize + 4;
    if nlit > 286 || ndist > 30 {
        return None;
    }
    let mut cl_lens = [0u8; 19];
    r.refill();
    for &i in &CL_ORDER[..ncl] {
        cl_lens[i] = r.take(3)? as u8;
    }
    let mut cl = Table::default();
    // The code length code has no extra bits folded in: `extra_lit` with symbols < 257.
    cl.build(&cl_lens, true)?;
    let mut lens = [0u8; 286 + 30];
    let mut i = 0;
    while i < nlit + ndist {
        r.refill();
        let (sym, n) = cl.decode(r.peek())?;
        r.consume(n)?;
        let (value, repeat) = match sym {
            0..=15 => (sym as u8, 1),
            16 => (*lens[..i].last()?, 3 + r.take(2)? as usize),
            17 => (0, 3 + r.take(3)? as usize),
            18 => (0, 11 + r.take(7)? as usize),
            _ => return None,
        };
        if i + repeat > nlit + ndist {
            return None;
        }
        lens[i..i + repeat].fill(value);
        i += repeat;
    }
    if lens[256] == 0 {
        return None;
    }
    lit.build(&lens[..nlit], true)?;
    dist.build(&lens[nlit..nlit + ndist], false)
}

/// A little-endian bit reader that keeps up to 64 bits buffered.
struct Bits<'a> {
    data: &'a [u8],
    /// Next byte to load into `buf`.
    pos: usize,
    buf: u64,
    /// Valid bits in `buf`.
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            buf: 0,
            n: 0,
        }
    }

    fn position(&self) -> u64 {
        self.pos as u64 * 8 - u64::from(self.n)
    }

    /// Buffer at least 56 bits, or all that is left.
    #[inline]
    fn refill(&mut self) {
        if let Some(w) = self.data.get(self.pos..self.pos + 8) {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            self.buf |= w << self.n;
            let k = (63 - self.n) / 8;
            self.pos += k as usize;
            self.n += k * 8;
        } else {
            while self.n <= 56 && self.pos < self.data.len() {
                self.buf |= u64::from(self.data[self.pos]) << self.n;
                self.pos += 1;
                self.n += 8;
            }
        }
    }

    #[inline]
    fn peek(&self) -> u64 {
        self.buf
    }

    #[inline]
    fn consume(&mut self, k: u32) -> Option<()> {
        if k > self.n {
            return None;
        }
        self.buf >>= k;
        self.n -= k;
        Some(())
    }

    /// `k` (at most 16) bits as a number; refills as needed.
    fn take(&mut self, k: u32) -> Option<u32> {
        if self.n < k {
            self.refill();
        }
        let v = (self.buf & ((1u64 << k) - 1)) as u32;
        self.consume(k)?;
        Some(v)
    }

    /// Drop the bits up to the next byte boundary.
    fn align(&mut self) {
        let drop = self.n % 8;
        self.buf >>= drop;
        self.n -= drop;
    }

    /// Skip `len` whole bytes (after `align`).
    fn skip_bytes(&mut self, len: usize) -> Option<()> {
        let at = (self.position() / 8) as usize + len;
        if at > self.data.len() {
            return None;
        }
        self.pos = at;
        self.buf = 0;
        self.n = 0;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn zlib_raw(data: &[u8], level: u32) -> Vec<u8> {
        let mut c = Compress::new(Compression::new(level), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Finish)
            .unwrap();
        out
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 5000) % 3 == 0 {
                    x as u8
                } else {
                    b"abcdefgh  \n"[(x % 11) as usize]
                }
            })
            .collect()
    }

    #[test]
    fn finds_the_end_of_every_block_type() {
        let data = sample(300_000);
        // Stored (level 0), fixed (tiny input), dynamic (the rest), several blocks each.
        for (input, level) in [
            (&data[..], 0),
            (&b"abc"[..], 6),
            (&b""[..], 6),
            (&data[..], 1),
            (&data[..], 9),
        ] {
            let z = zlib_raw(input, level);
            let e = scan(&z).expect("valid deflate");
            assert!(e.end <= z.len() as u64 * 8 && e.end > (z.len() as u64 - 1) * 8);
            assert!(e.last_block < e.end);
            assert_eq!(z[(e.last_block / 8) as usize] >> (e.last_block % 8) & 1, 1);
        }
    }

    #[test]
    fn finds_the_end_of_what_libdeflate_writes_at_every_level() {
        let data = sample(400_000);
        for level in 1..=12 {
            let mut c =
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
            for n in [0, 1, 40, 100, 5_000, 70_000, 400_000] {
                let mut z = vec![0; c.deflate_compress_bound(n)];
                let len = c.deflate_compress(&data[..n], &mut z).unwrap();
                let e = scan(&z[..len]).unwrap_or_else(|| panic!("level {level}, {n} bytes"));
                assert!(e.end > (len as u64 - 1) * 8 && e.end <= len as u64 * 8);
                assert_eq!(z[(e.last_block / 8) as usize] >> (e.last_block % 8) & 1, 1);
            }
        }
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(scan(&[]), None);
        assert_eq!(scan(&[0x07]), None); // BTYPE 11
        let z = zlib_raw(&sample(100_000), 6);
        assert_eq!(scan(&z[..z.len() / 2]), None);
    }
}
