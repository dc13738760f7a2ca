//! The systemd unit file syntax (systemd.syntax(7)): sections, `Key=Value`
//! assignments, comments and backslash continuations. Pure: text in,
//! assignments and syntax errors out.
//!
//! Like systemd itself, a bad line is reported and skipped and the rest of
//! the file still counts ("Missing '=', ignoring line." in the journal), so
//! one broken unit never stops an audit.

/// One `Key=Value` line (or continued lines) as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    /// Trimmed; continuations joined with a space, as systemd does.
    pub value: String,
    /// 1-based line where the assignment starts.
    pub line: usize,
    /// The line as written (continuations joined), for evidence.
    pub text: String,
}

/// A line systemd would ignore with a warning.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct SyntaxError {
    pub line: usize,
    pub text: String,
    pub message: &'static str,
}

/// A parsed unit file or drop-in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub assignments: Vec<Assignment>,
    pub errors: Vec<SyntaxError>,
}

/// Parses unit file text. Never fails as a whole.
pub fn parse(text: &str) -> UnitFile {
    let mut out = UnitFile::default();
    let mut section: Option<String> = None;
    // Logical lines: (first line number, joined text).
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((line_no, raw)) = lines.next() {
        let mut logical = raw.trim().to_string();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with(';') {
            continue;
        }
        // systemd.syntax(7): "Lines ending in a backslash are concatenated
        // with the following line while reading and the backslash is
        // replaced by a space character." Comment lines inside are skipped.
        'joining: while logical.ends_with('\\') {
            logical.pop();
            logical.push(' ');
            loop {
                let Some((_, next)) = lines.next() else {
                    break 'joining;
                };
                let next = next.trim();
                if next.starts_with('#') || next.starts_with(';') {
                    continue;
                }
                logical.push_str(next);
                break;
            }
        }
        let logical = logical.trim().to_string();
        if logical.starts_with('[') {
            if logical.ends_with(']') && logical.len() > 2 {
                section = Some(logical[1..logical.len() - 1].to_string());
            } else {
                out.errors.push(SyntaxError {
                    line: line_no,
                    text: logical,
                    message: "invalid section header",
                });
                // systemd drops what follows until the next valid header.
                section = None;
            }
            continue;
        }
        let Some((key, value)) = logical.split_once('=') else {
            out.errors.push(SyntaxError {
                line: line_no,
                text: logical,
                message: "missing '='",
            });
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            out.errors.push(SyntaxError {
                line: line_no,
                text: logical.clone(),
                message: "empty key",
            });
            continue;
        }
        let Some(section) = &section else {
            out.errors.push(SyntaxError {
                line: line_no,
                text: logical.clone(),
                message: "assignment outside of any section",
            });
            continue;
        };
        out.assignments.push(Assignment {
            section: section.clone(),
            key: key.to_string(),
            value: value.trim().to_string(),
            line: line_no,
            text: logical.clone(),
        });
    }
    out
}

/// systemd's boolean (`parse_boolean()` in src/basic/parse-util.c).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Splits a space-separated list value (`After=a.service b.service`).
pub fn words(v: &str) -> impl Iterator<Item = &str> {
    v.split_ascii_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_assignments_comments() {
        let f = parse(
            "# comment\n[Unit]\nDescription = NTP  \n; other comment\n\n[Service]\nPrivateTmp=true\nExecStart=/usr/sbin/ntpd -u ntp:ntp $OPTIONS\n",
        );
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let a: Vec<(&str, &str, &str, usize)> = f
            .assignments
            .iter()
            .map(|a| (a.section.as_str(), a.key.as_str(), a.value.as_str(), a.line))
            .collect();
        assert_eq!(
            a,
            vec![
                ("Unit", "Description", "NTP", 3),
                ("Service", "PrivateTmp", "true", 7),
                (
                    "Service",
                    "ExecStart",
                    "/usr/sbin/ntpd -u ntp:ntp $OPTIONS",
                    8
                ),
            ]
        );
    }

    #[test]
    fn continuations_join_with_a_space_and_keep_the_first_line_number() {
        let f = parse("[Service]\nReadOnlyPaths=/a \\\n  # skipped\n  /b\\\n/c\nX=1\n");
        assert!(f.errors.is_empty());
        assert_eq!(f.assignments[0].value, "/a  /b /c");
        assert_eq!(f.assignments[0].line, 2);
        assert_eq!(f.assignments[1].line, 6);
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let f = parse(
            "Orphan=1\n[Service\nPrivateTmp=true\n[Service]\nPrivateTmp\n=x\nMountFlags=private\n",
        );
        let errs: Vec<(usize, &str)> = f.errors.iter().map(|e| (e.line, e.message)).collect();
        assert_eq!(
            errs,
            vec![
                (1, "assignment outside of any section"),
                (2, "invalid section header"),
                (3, "assignment outside of any section"),
                (5, "missing '='"),
                (6, "empty key"),
            ]
        );
        assert_eq!(f.assignments.len(), 1);
        assert_eq!(f.assignments[0].key, "MountFlags");
        assert_eq!(f.assignments[0].line, 7);
    }

    #[test]
    fn booleans() {
        for t in ["yes", "TRUE", "on", "1", "y", "t"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["no", "False", "off", "0", "n", "f"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("strict"), None);
    }
}
