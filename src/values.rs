//! Flag values clap checks before anything runs, so that a bad one is a
//! usage error (exit 2) like every other: sizes (`50MiB`) and upstream
//! URLs.

/// `--max-body`'s value, for clap (a bad one is a usage error, exit 2).
pub(crate) fn size_arg(raw: &str) -> Result<usize, String> {
    parse_size(raw).ok_or_else(|| {
        "use a number with an optional unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. 50MiB, 512KB, \
         1048576"
            .to_owned()
    })
}

/// An `--upstream` URL, for clap: http:// or https:// (a bad one is a usage
/// error, exit 2).
pub(crate) fn upstream_arg(raw: &str) -> Result<String, String> {
    let url = raw.trim();
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_owned())
    } else {
        Err("expected an http:// or https:// URL, e.g. https://openrouter.ai/api/v1".to_owned())
    }
}

/// Parse `50MiB`, `512KB`, `1.5GiB`, `1048576` into bytes.
fn parse_size(raw: &str) -> Option<usize> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 1.0 && bytes <= usize::MAX as f64).then_some(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MiB"), Some(50 * 1024 * 1024));
        assert_eq!(parse_size("512KB"), Some(512_000));
        assert_eq!(parse_size("1048576"), Some(1_048_576));
        assert_eq!(parse_size(" 2 gib "), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }

    #[test]
    fn upstreams_are_http_urls() {
        assert_eq!(
            upstream_arg(" https://openrouter.ai/api/v1 "),
            Ok("https://openrouter.ai/api/v1".to_owned())
        );
        assert!(upstream_arg("ftp://x").is_err());
        assert!(upstream_arg("openrouter.ai").is_err());
    }
}
