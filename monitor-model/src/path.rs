//! Paths as bytes. Linux paths are not text: a mount point may hold spaces,
//! tabs, newlines or bytes that are not UTF-8, and the remedy we print must
//! name exactly that path.

use std::fmt;

/// A path, exactly as the kernel has it.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathBytes(pub Vec<u8>);

impl PathBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_absolute(&self) -> bool {
        self.0.first() == Some(&b'/')
    }

    /// True when `self` is `dir` or lies below it (`/a/b` is under `/a`,
    /// `/ab` is not). Every path is under `/`.
    pub fn is_under(&self, dir: &PathBytes) -> bool {
        let (p, d) = (self.as_bytes(), dir.as_bytes());
        if d == b"/" {
            return self.is_absolute();
        }
        let d = d.strip_suffix(b"/").unwrap_or(d);
        p == d || (p.starts_with(d) && p.get(d.len()) == Some(&b'/'))
    }

    /// The path as text when it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Text for people: invalid UTF-8 becomes U+FFFD. Never use it to act.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// The path quoted for a POSIX shell (bash's `$'…'` when it holds
    /// control or non-UTF-8 bytes), so a printed remedy can be pasted as is.
    pub fn shell_quoted(&self) -> String {
        shell_quote(&self.0)
    }

    /// Lower-case hex of the bytes, for JSON consumers that need the exact
    /// path when it is not UTF-8.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn join(&self, rest: &[u8]) -> PathBytes {
        let mut out = self.0.clone();
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(rest.strip_prefix(b"/").unwrap_or(rest));
        PathBytes(out)
    }
}

/// Quotes bytes for a POSIX shell. Plain words stay bare; anything printable
/// goes in single quotes; control bytes or non-UTF-8 use `$'…'` with `\xNN`.
pub fn shell_quote(bytes: &[u8]) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-+:,=@%".contains(&b);
    if !bytes.is_empty() && bytes.iter().all(|&b| plain(b)) {
        // SAFETY-free: all ASCII.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let text = std::str::from_utf8(bytes).ok();
    let needs_ansi = text.is_none() || bytes.iter().any(|&b| b < 0x20 || b == 0x7f);
    if !needs_ansi {
        let text = text.unwrap_or_default();
        return format!("'{}'", text.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for &b in bytes {
        match b {
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

impl fmt::Debug for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl fmt::Display for PathBytes {
    /// Shell-quoted, so what a person copies is what the kernel has.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shell_quoted())
    }
}

impl From<&str> for PathBytes {
    fn from(s: &str) -> Self {
        PathBytes(s.as_bytes().to_vec())
    }
}

impl From<String> for PathBytes {
    fn from(s: String) -> Self {
        PathBytes(s.into_bytes())
    }
}

impl From<&[u8]> for PathBytes {
    fn from(b: &[u8]) -> Self {
        PathBytes(b.to_vec())
    }
}

impl From<Vec<u8>> for PathBytes {
    fn from(b: Vec<u8>) -> Self {
        PathBytes(b)
    }
}

impl serde::Serialize for PathBytes {
    /// A JSON string: exact when the path is UTF-8 (JSON escapes newlines and
    /// tabs); otherwise lossy, and the output carries a `*_hex` twin.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_respects_component_boundaries() {
        let p = PathBytes::from("/var/lib/docker/overlay2/x/merged");
        assert!(p.is_under(&"/var/lib/docker".into()));
        assert!(p.is_under(&"/var/lib/docker/".into()));
        assert!(p.is_under(&"/".into()));
        assert!(p.is_under(&p.clone()));
        assert!(!p.is_under(&"/var/lib/dock".into()));
        assert!(!PathBytes::from("relative").is_under(&"/".into()));
    }

    #[test]
    fn shell_quoting_keeps_every_byte() {
        assert_eq!(shell_quote(b"/var/lib/x"), "/var/lib/x");
        assert_eq!(shell_quote(b"/a b"), "'/a b'");
        assert_eq!(shell_quote(b"/it's"), r"'/it'\''s'");
        assert_eq!(shell_quote(b"/a\nb\tc"), r"$'/a\nb\tc'");
        assert_eq!(shell_quote(b"/caf\xe9"), r"$'/caf\xe9'");
        assert_eq!(shell_quote(b"/q'\\\xff"), r"$'/q\'\\\xff'");
        assert_eq!(shell_quote(b""), "''");
    }

    #[test]
    fn hex_is_exact() {
        assert_eq!(PathBytes(vec![b'/', 0xff, b'\n']).hex(), "2fff0a");
    }
}
