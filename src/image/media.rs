//! Layer media types and compression: the one place that decides how a layer's bytes are
//! stored (gzip, zstd, plain tar), from its media type or, where that is missing or lies, from
//! the magic bytes at its start.

use oci_spec::image::MediaType;

/// How a layer blob's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zstd: recognised so it can be named in errors; lamina does not decompress it.
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// From a layer media type (OCI or Docker); `None` for what is not a tar layer.
    pub fn of_media_type(mt: &MediaType) -> Option<Compression> {
        let s = mt.to_string();
        if s.ends_with("+gzip") || s.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if s.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if s.ends_with(".tar") || s.ends_with(".tar.v1") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the first bytes of a blob (at least 4 for zstd; fewer means "not compressed").
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The OCI media type for a Docker layer media type (others unchanged).
pub fn oci_layer_media_type(mt: &MediaType) -> MediaType {
    match mt.to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            MediaType::ImageLayerNonDistributableGzip
        }
        "application/vnd.docker.image.rootfs.diff.tar" => MediaType::ImageLayer,
        _ => mt.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_magic_agree() {
        assert_eq!(
            Compression::of_media_type(&MediaType::ImageLayerGzip),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_media_type(&MediaType::ImageLayer),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::of_media_type(&MediaType::Other(
                "application/vnd.docker.image.rootfs.diff.tar.gzip".into()
            )),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::of_media_type(&MediaType::ImageConfig), None);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(&ZSTD_MAGIC), Compression::Zstd);
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
    }
}
