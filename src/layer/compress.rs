//! Parallel gzip for layers, pigz-style, whose bytes depend only on the input and the level.
//!
//! The uncompressed stream is cut into fixed 1 MiB blocks — never sized by core count or timing.
//! Worker threads compress the blocks independently with libdeflate (which gave the best size
//! for the time of the candidates measured: zlib-rs, zlib-ng and libdeflate), and each block
//! ends on a byte boundary, so that written in order they form one deflate stream behind one
//! gzip header; the trailer's CRC-32 is combined from the blocks' CRCs. libdeflate only writes
//! complete streams: `deflate_scan` finds where each one's final block starts and ends, so its
//! BFINAL bit can be cleared and an empty stored block appended (what zlib's sync flush writes).
//!
//! Incompressible data costs almost nothing: within a block, every 4 KiB piece whose byte
//! histogram is flat (compressed archives, images, random data) is written as stored blocks
//! without running deflate on it, and a deflated run that did not shrink is stored instead.
//! Memory stays bounded: at most two blocks per worker are in flight.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Mutex, mpsc};

use libdeflater::{CompressionLvl, Compressor};

/// The gzip level used unless a spec or flag says otherwise.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 4;

/// Uncompressed bytes per independently compressed block.
pub const BLOCK: usize = 1 << 20;
/// Granularity of the incompressible-data test.
const PROBE: usize = 4 * 1024;
/// Largest payload of one stored deflate block.
const MAX_STORED: usize = 65535;
/// More workers than this would not be fed by one tar stream, and would only cost memory.
const MAX_WORKERS: usize = 8;

/// Workers to use by default: one per core, at most [`MAX_WORKERS`]. The output does not depend
/// on it.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// A block handed to a worker.
struct Job {
    data: Vec<u8>,
    last: bool,
    done: mpsc::SyncSender<io::Result<Done>>,
}

/// A compressed block and the CRC-32 of its uncompressed bytes.
struct Done {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// Compress the stream given as `chunks` (of any sizes) at `level` (0: store, 1-9 as libdeflate's
/// levels) into one gzip member written to `out`, using `workers` threads. Gzip header: no
/// name, mtime 0, OS unknown.
pub fn gzip<W: Write>(
    chunks: impl IntoIterator<Item = Vec<u8>>,
    level: u32,
    workers: usize,
    mut out: W,
) -> io::Result<W> {
    let level = level.min(9);
    let workers = workers.max(1);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = &job_rx;
            s.spawn(move || work(level, job_rx));
        }
        // Owns the job sender: however this closure ends, the workers then stop.
        let mut pipe = Pipeline {
            jobs: job_tx,
            pending: VecDeque::new(),
            max_pending: 2 * workers,
            crc: crc32fast::Hasher::new(),
        };
        out.write_all(&header(level))?;
        let mut block = Vec::with_capacity(BLOCK);
        let mut total: u64 = 0;
        for chunk in chunks {
            if block.len() == BLOCK && !chunk.is_empty() {
                pipe.submit(std::mem::take(&mut block), false, &mut out)?;
            }
            if block.is_empty() && chunk.len() <= BLOCK {
                // Taken as it is (layers come in chunks of exactly BLOCK bytes): no copy.
                total += chunk.len() as u64;
                block = chunk;
                continue;
            }
            let mut data = &chunk[..];
            while !data.is_empty() {
                if block.len() == BLOCK {
                    // A full block with more data after it: not the last one.
                    let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK));
                    pipe.submit(full, false, &mut out)?;
                }
                let n = (BLOCK - block.len()).min(data.len());
                block.extend_from_slice(&data[..n]);
                total += n as u64;
                data = &data[n..];
            }
        }
        pipe.submit(block, true, &mut out)?;
        let crc = pipe.finish(&mut out)?;
        out.write_all(&crc.finalize().to_le_bytes())?;
        // ISIZE: the length modulo 2^32.
        out.write_all(&(total as u32).to_le_bytes())?;
        Ok(out)
    })
}

/// A worker: compress blocks until the job channel closes.
fn work(level: u32, jobs: &Mutex<mpsc::Receiver<Job>>) {
    // Room for libdeflate's output, reused from block to block.
    let mut scratch = Vec::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { break };
        let r = compress_block(level, &job.data, job.last, &mut scratch);
        // The coordinator may have stopped on an error: nobody to tell, then.
        let _ = job.done.send(r);
    }
}

/// The coordinator's side: blocks go to the workers in order, and their compressed bytes are
/// written in that same order.
struct Pipeline {
    jobs: mpsc::Sender<Job>,
    /// Blocks handed out and not yet written, oldest first.
    pending: VecDeque<mpsc::Receiver<io::Result<Done>>>,
    /// Blocks in flight before the oldest is waited for: memory stays bounded.
    max_pending: usize,
    /// CRC-32 of the blocks written so far.
    crc: crc32fast::Hasher,
}

impl Pipeline {
    /// Hand a block to the workers; write the oldest compressed block if enough are in flight.
    fn submit(&mut self, data: Vec<u8>, last: bool, out: &mut impl Write) -> io::Result<()> {
        let (done, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Job { data, last, done })
            .map_err(|_| io::Error::other("the compression workers stopped"))?;
        self.pending.push_back(rx);
        if !last && self.pending.len() >= self.max_pending {
            self.write_oldest(out)?;
        }
        Ok(())
    }

    /// Wait for the oldest block in flight and write it.
    fn write_oldest(&mut self, out: &mut impl Write) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))??;
        self.crc.combine(&done.crc);
        out.write_all(&done.bytes)
    }

    /// Write every pending block and return the CRC-32 of the whole stream; the job sender
    /// is dropped on return, which lets the workers stop.
    fn finish(mut self, out: &mut impl Write) -> io::Result<crc32fast::Hasher> {
        while !self.pending.is_empty() {
            self.write_oldest(out)?;
        }
        Ok(self.crc)
    }
}

/// The 10-byte gzip header: no name, mtime 0, OS 255 (unknown); XFL as gzip sets it.
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// Compress a block into raw deflate that ends on a byte boundary, or with the final block when
/// `last`.
fn compress_block(level: u32, data: &[u8], last: bool, scratch: &mut Vec<u8>) -> io::Result<Done> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    if data.is_empty() {
        // Only an empty stream has an empty block: an empty final fixed-Huffman block.
        let bytes = if last { vec![0x03, 0x00] } else { Vec::new() };
        return Ok(Done { bytes, crc });
    }
    // A new compressor for each block, so that nothing a thread did before can matter.
    let mut c = match level {
        0 => None,
        l => Some(Compressor::new(
            CompressionLvl::new(l as i32).map_err(|e| io::Error::other(format!("{e:?}")))?,
        )),
    };
    // Runs of pieces of the same kind: deflated, or stored as they are.
    let kinds: Vec<bool> = data
        .chunks(PROBE)
        .map(|p| c.is_none() || looks_random(p))
        .collect();
    let runs = 1 + kinds.windows(2).filter(|w| w[0] != w[1]).count();
    // No run takes more than its stored size: this is enough, and is never reallocated.
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / MAX_STORED + runs + 1));
    let mut i = 0;
    while i < kinds.len() {
        let j = (i..kinds.len())
            .find(|&j| kinds[j] != kinds[i])
            .unwrap_or(kinds.len());
        let run = &data[i * PROBE..(j * PROBE).min(data.len())];
        let fin = last && j == kinds.len();
        match c.as_mut() {
            Some(c) if !kinds[i] => {
                if !deflate(c, run, fin, scratch, &mut out) {
                    stored(run, fin, &mut out);
                }
            }
            _ => stored(run, fin, &mut out),
        }
        i = j;
    }
    Ok(Done { bytes: out, crc })
}

/// Whether a piece's bytes look uniformly distributed, so that deflate would not shrink it:
/// the collision count of its byte histogram (sum of squared counts) is close to that of random
/// bytes (n²/256 + n). Text, code and binaries with structure are far above. Integer arithmetic
/// only, so the answer is the same on every machine.
fn looks_random(p: &[u8]) -> bool {
    if p.len() < PROBE {
        return false;
    }
    let mut counts = [[0u32; 256]; 4];
    let mut quads = p.chunks_exact(4);
    for q in &mut quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    let sum_sq: u64 = (0..256)
        .map(|b| {
            let c = u64::from(counts[0][b] + counts[1][b] + counts[2][b] + counts[3][b]);
            c * c
        })
        .sum();
    let n = p.len() as u64;
    // An "effective alphabet" n²/sum_sq above 208 of 256 symbols (random 4 KiB: about 241).
    n * n > 208 * sum_sq
}

/// Bytes that `stored` writes for `n` bytes of data.
fn stored_size(n: usize) -> usize {
    n + 5 * n.div_ceil(MAX_STORED).max(1)
}

/// `data` as stored deflate blocks (each starts on a byte boundary: BFINAL, BTYPE 00, padding).
fn stored(data: &[u8], fin: bool, out: &mut Vec<u8>) {
    let mut pieces = data.chunks(MAX_STORED).peekable();
    while let Some(p) = pieces.next() {
        out.push(u8::from(fin && pieces.peek().is_none()));
        let len = p.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(p);
    }
}

/// Deflate `data` with libdeflate onto `out`, chained (see `deflate_scan`), through `scratch`.
/// False, with nothing written, if that would not be smaller than storing it.
fn deflate(
    c: &mut Compressor,
    data: &[u8],
    fin: bool,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> bool {
    let bound = c.deflate_compress_bound(data.len());
    if scratch.len() < bound {
        scratch.resize(bound, 0);
    }
    let Ok(n) = c.deflate_compress(data, scratch) else {
        return false;
    };
    let z = &mut scratch[..n];
    let keep = if fin {
        n
    } else {
        let Some(e) = super::deflate_scan::scan(z) else {
            return false;
        };
        // Not the final block after all; after its end, an empty stored block (BFINAL 0, BTYPE
        // 00: zero bits up to the byte boundary, then LEN 0, NLEN 0xffff) brings the next run
        // onto a byte boundary.
        z[(e.last_block / 8) as usize] &= !(1u8 << (e.last_block % 8));
        if e.end % 8 != 0 {
            z[(e.end / 8) as usize] &= (1u8 << (e.end % 8)) - 1;
        }
        (e.end + 3).div_ceil(8) as usize
    };
    let marker: &[u8] = if fin { &[] } else { &[0, 0, 0xff, 0xff] };
    if keep + marker.len() > stored_size(data.len()) {
        return false;
    }
    out.extend_from_slice(&z[..keep.min(n)]);
    out.resize(out.len() + keep.saturating_sub(n), 0);
    out.extend_from_slice(marker);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic test data: text-like runs, random runs and zeros, mixed.
    fn sample(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [
            &b"lambda "[..],
            b"handler ",
            b"return ",
            b"event\n",
            b"{\"key\": 1}, ",
        ];
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let kind = rnd() % 3;
            let len = (rnd() % 200_000) as usize;
            for _ in 0..len {
                if v.len() == n {
                    break;
                }
                match kind {
                    0 => v.extend_from_slice(words[(rnd() % 5) as usize]),
                    1 => v.push(rnd() as u8),
                    _ => v.push(0),
                }
            }
        }
        v.truncate(n);
        v
    }

    fn gz(data: &[u8], level: u32, workers: usize, chunk: usize) -> Vec<u8> {
        let chunks: Vec<Vec<u8>> = data.chunks(chunk.max(1)).map(|c| c.to_vec()).collect();
        gzip(chunks, level, workers, Vec::new()).unwrap()
    }

    fn gunzip(z: &[u8]) -> Vec<u8> {
        // Not the multi-member decoder: the output must be a single gzip member.
        let mut d = flate2::read::GzDecoder::new(z);
        let mut v = Vec::new();
        d.read_to_end(&mut v).unwrap();
        assert!(d.into_inner().is_empty(), "bytes after the gzip member");
        v
    }

    #[test]
    fn same_bytes_whatever_the_workers_and_chunking() {
        let data = sample(5 * BLOCK + 12345, 7);
        for level in [0, 1, 4, 6, 9] {
            let one = gz(&data, level, 1, BLOCK);
            assert_eq!(gz(&data, level, 2, 1000), one, "level {level}, 2 workers");
            assert_eq!(
                gz(&data, level, 4, 3 * BLOCK + 1),
                one,
                "level {level}, 4 workers"
            );
            assert_eq!(gunzip(&one), data, "level {level}");
        }
    }

    #[test]
    fn round_trips_edge_sizes() {
        for n in [
            0,
            1,
            PROBE - 1,
            PROBE,
            PROBE + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
        ] {
            let data = sample(n, n as u64 + 1);
            for level in [0, 6] {
                let z = gz(&data, level, 3, 65536);
                assert_eq!(gunzip(&z), data, "{n} bytes at level {level}");
            }
        }
    }

    #[test]
    fn random_data_is_stored_and_text_shrinks() {
        let mut x = 0x2545f4914f6cdd1du64;
        let random: Vec<u8> = (0..3 * BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(looks_random(&random[..PROBE]));
        let z = gz(&random, 6, 2, BLOCK);
        // Stored: 5 bytes per 64 KiB of each block over the data, plus header and trailer.
        assert_eq!(z.len(), 3 * stored_size(BLOCK) + 18);
        assert_eq!(gunzip(&z), random);

        let text: Vec<u8> = b"def handler(event, context):\n    return event\n"
            .iter()
            .copied()
            .cycle()
            .take(BLOCK * 2)
            .collect();
        assert!(!looks_random(&text[..PROBE]));
        let z = gz(&text, 6, 2, BLOCK);
        assert!(z.len() < text.len() / 50, "{}", z.len());
        assert_eq!(gunzip(&z), text);
    }

    #[test]
    fn chained_streams_inflate_as_one() {
        let data = sample(600_000, 11);
        for level in [1, 4, 9, 12] {
            let mut c = Compressor::new(CompressionLvl::new(level).unwrap());
            let mut scratch = Vec::new();
            let mut out = Vec::new();
            // Cuts at odd places, the last run final; a run that does not shrink is stored.
            let cuts = [0, 1000, 1001, 77_777, 300_000, 600_000];
            for w in cuts.windows(2) {
                let fin = w[1] == data.len();
                let run = &data[w[0]..w[1]];
                if !deflate(&mut c, run, fin, &mut scratch, &mut out) {
                    stored(run, fin, &mut out);
                }
            }
            let mut d = flate2::read::DeflateDecoder::new(&out[..]);
            let mut back = Vec::new();
            d.read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "level {level}");
        }
    }

    #[test]
    fn header_is_fixed() {
        let z = gz(b"x", 6, 1, 1);
        assert_eq!(&z[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let empty = gz(b"", 6, 1, 1);
        assert_eq!(gunzip(&empty), b"");
        assert_eq!(empty.len(), 10 + 2 + 8);
    }
}
