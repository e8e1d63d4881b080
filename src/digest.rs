//! Content digests and the hashing readers/writers that compute them while bytes stream past.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A `sha256:<64 lowercase hex>` content digest, valid once parsed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a running hasher has computed.
    pub fn of_hasher(h: Sha256) -> Self {
        Self::from_hasher(h)
    }

    fn from_hasher(h: Sha256) -> Self {
        Digest {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The 64 hex characters, as used for blob file names.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// As the `oci-spec` type.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        self.to_string()
            .parse()
            .expect("a sha256 digest is a valid OCI digest")
    }

    /// From the `oci-spec` type; only sha256 is accepted (it is what every registry and Lambda use).
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Self, ParseDigestError> {
        d.to_string().parse()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Why a string is not a [`Digest`]; the message names the string. The caller turns it into the
/// [`Error`](crate::error::Error) kind that fits where the digest came from (a flag, an image).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseDigestError(String);

/// The message, for callers that build an error message around it.
impl From<ParseDigestError> for String {
    fn from(e: ParseDigestError) -> String {
        e.0
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, ParseDigestError> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            ParseDigestError(format!(
                "digest `{s}` is not a sha256 digest (`sha256:<64 hex>`)"
            ))
        })?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseDigestError(format!(
                "digest `{s}` is malformed: expected 64 lowercase hex characters after `sha256:`"
            )));
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hash what is written to `inner`, from now on.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the digest and the byte count of what went through.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    /// Hash what is read from `inner`, from now on.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The inner reader, the digest and the byte count of what was read through.
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Hash a whole stream (digest, size) without keeping it.
pub fn hash_reader(r: impl Read) -> io::Result<(Digest, u64)> {
    let mut hr = HashingReader::new(r);
    io::copy(&mut hr, &mut io::sink())?;
    let (_, d, n) = hr.finish();
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn writer_and_reader_agree_with_one_shot() {
        let data = b"hello lamina".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, Digest::of(&data));
        assert_eq!(hash_reader(&data[..]).unwrap(), (d, n));
    }

    #[test]
    fn parse_rejects_bad_digests() {
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("md5:0000".parse::<Digest>().is_err());
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok.parse::<Digest>().unwrap().to_string(), ok);
    }
}
