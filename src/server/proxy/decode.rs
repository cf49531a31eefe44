//! Bodies the upstream encoded although orproxy asked for none
//! (`Accept-Encoding: identity`). gzip and deflate are decoded, so that the
//! answer can be judged (and a key in it masked) like any other, and are
//! relayed decoded; any other encoding is relayed as it came, with its
//! header, and judged by its status alone. Never a broken connection.

use actix_web::http::header::{self, HeaderMap};
use bytes::Bytes;
use std::io::Read;

/// How an upstream body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Not at all (no `Content-Encoding`, or `identity`).
    Identity,
    /// gzip (also `x-gzip`).
    Gzip,
    /// zlib-wrapped deflate.
    Deflate,
    /// Something orproxy does not decode (br, zstd...).
    Opaque,
}

/// The encoding `headers` declare.
pub(crate) fn encoding(headers: &HeaderMap) -> Encoding {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Encoding::Identity;
    };
    match value
        .to_str()
        .unwrap_or("?")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "identity" => Encoding::Identity,
        "gzip" | "x-gzip" => Encoding::Gzip,
        "deflate" => Encoding::Deflate,
        _ => Encoding::Opaque,
    }
}

/// `body` decoded, at most `limit` bytes of it; None when it cannot be
/// decoded whole within the limit (it is then relayed as it came).
pub(crate) fn decode(encoding: Encoding, body: &[u8], limit: usize) -> Option<Bytes> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
        Encoding::Identity | Encoding::Opaque => return None,
    };
    let mut out = Vec::new();
    let read = reader
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)
        .ok()?;
    (read <= limit).then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn encodings_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(encoding(&h), Encoding::Identity);
        for (value, want) in [
            ("gzip", Encoding::Gzip),
            (" X-GZIP ", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("identity", Encoding::Identity),
            ("br", Encoding::Opaque),
            ("gzip, br", Encoding::Opaque),
        ] {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(encoding(&h), want, "{value}");
        }
    }

    #[test]
    fn gzip_and_deflate_decode_within_the_limit() {
        let body = br#"{"error":{"message":"Rate limit exceeded","code":429}}"#;
        assert_eq!(
            decode(Encoding::Gzip, &gzip(body), 1024).as_deref(),
            Some(&body[..])
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        assert_eq!(
            decode(Encoding::Deflate, &z.finish().unwrap(), 1024).as_deref(),
            Some(&body[..])
        );
        assert_eq!(
            decode(Encoding::Gzip, &gzip(body), 10),
            None,
            "over the limit"
        );
        assert_eq!(decode(Encoding::Gzip, b"not gzip", 1024), None);
        assert_eq!(decode(Encoding::Opaque, body, 1024), None);
    }
}
