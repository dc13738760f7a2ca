//! An exact parser of `/proc/PID/mountinfo` (proc_pid_mountinfo(5)).
//!
//! Owns the line format only; no I/O. Paths come back as bytes with the
//! kernel's octal escapes undone, so a mount point holding a space, tab,
//! newline, backslash or non-UTF-8 bytes is exactly the path the kernel has.
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//! ```
//!
//! The kernel escapes ` `, `\t`, `\n` and `\` as `\ooo` in the root, mount
//! point, fstype and source (`fs/proc_namespace.c`: `mangle()` and
//! `seq_path_root(m, …, " \t\n\\")`). Super options are printed by each
//! filesystem's `show_options` with its own escaping (overlay also escapes
//! `,` and `=`), so they are kept raw.

use monitor_model::{Dev, MountEntry, PathBytes};

/// One parsed line: the model's [`MountEntry`] plus the fields it does not
/// carry (yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountinfoLine {
    pub entry: MountEntry,
    /// Field 6, per-mount options (`rw,nosuid,relatime`), raw.
    pub mount_options: PathBytes,
    /// `propagate_from:N`: the closest dominant peer group the slave
    /// receives from, shown when `master:N` is not reachable from the
    /// reader's root (Documentation/filesystems/sharedsubtree.rst).
    pub propagate_from: Option<u32>,
    /// Per-superblock options (overlay's `upperdir=`, ...), raw. Not part of
    /// [`MountEntry`]: nothing judges by them, and formatting them is most of
    /// what an overlay's mountinfo line costs the kernel.
    pub super_options: PathBytes,
}

/// Why a line could not be parsed. The line is skipped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line {line}: missing field {field}")]
    MissingField { line: usize, field: &'static str },
    #[error("line {line}: bad {field}: {value:?}")]
    BadField {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("line {line}: no ' - ' separator before the filesystem fields")]
    NoSeparator { line: usize },
}

/// A whole mountinfo file: the lines that parsed, and the ones that did not.
#[derive(Clone, Debug, Default)]
pub struct Mountinfo {
    pub mounts: Vec<MountinfoLine>,
    pub errors: Vec<LineError>,
}

impl Mountinfo {
    /// The model's view of the table.
    pub fn into_entries(self) -> Vec<MountEntry> {
        self.mounts.into_iter().map(|m| m.entry).collect()
    }
}

/// Parses a whole `/proc/PID/mountinfo` file. Malformed lines are skipped
/// and reported in [`Mountinfo::errors`]; this never fails as a whole.
pub fn parse(text: &[u8]) -> Mountinfo {
    let mut out = Mountinfo::default();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        // The file ends with a newline; a truly empty line carries nothing.
        if line.is_empty() {
            continue;
        }
        match parse_line(line, index + 1) {
            Ok(mount) => out.mounts.push(mount),
            Err(err) => out.errors.push(err),
        }
    }
    out
}

/// Parses one line (without its newline). `line_no` is 1-based and only used
/// in errors.
pub fn parse_line(line: &[u8], line_no: usize) -> Result<MountinfoLine, LineError> {
    // Fields are separated by exactly one space; every space inside a field
    // is escaped, so splitting is safe and an empty field stays visible.
    let mut fields = line.split(|&b| b == b' ');

    let mount_id = number::<u64>(take(&mut fields, line_no, "mount ID")?, line_no, "mount ID")?;
    let parent_id = number::<u64>(
        take(&mut fields, line_no, "parent ID")?,
        line_no,
        "parent ID",
    )?;
    let dev = device(take(&mut fields, line_no, "major:minor")?, line_no)?;
    let root = unescape(take(&mut fields, line_no, "root")?);
    let mount_point = unescape(take(&mut fields, line_no, "mount point")?);
    let mount_options = PathBytes::from(take(&mut fields, line_no, "mount options")?);

    let mut shared = None;
    let mut master = None;
    let mut propagate_from = None;
    let mut unbindable = false;
    loop {
        let field = fields
            .next()
            .ok_or(LineError::NoSeparator { line: line_no })?;
        if field == b"-" {
            break;
        }
        // Unknown tags are ignored, as proc_pid_mountinfo(5) asks of parsers.
        if let Some(n) = field.strip_prefix(b"shared:") {
            shared = Some(number(n, line_no, "shared:N")?);
        } else if let Some(n) = field.strip_prefix(b"master:") {
            master = Some(number(n, line_no, "master:N")?);
        } else if let Some(n) = field.strip_prefix(b"propagate_from:") {
            propagate_from = Some(number(n, line_no, "propagate_from:N")?);
        } else if field == b"unbindable" {
            unbindable = true;
        }
    }

    let fstype_raw = unescape(take(&mut fields, line_no, "filesystem type")?);
    let fstype = String::from_utf8(fstype_raw.0).map_err(|e| LineError::BadField {
        line: line_no,
        field: "filesystem type",
        value: String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })?;
    if fstype.is_empty() {
        return Err(LineError::MissingField {
            line: line_no,
            field: "filesystem type",
        });
    }
    // Some kernels printed an empty source; it is a valid (empty) field.
    let source = unescape(take(&mut fields, line_no, "mount source")?);
    // Kept raw, and taken to the end of the line: the filesystem's own
    // escaping decides what a space means in there.
    let rest: Vec<&[u8]> = fields.collect();
    if rest.is_empty() {
        return Err(LineError::MissingField {
            line: line_no,
            field: "super options",
        });
    }
    let super_options = PathBytes(rest.join(&b' '));

    Ok(MountinfoLine {
        entry: MountEntry {
            mount_id,
            parent_id,
            dev,
            root,
            mount_point,
            fstype,
            source,
            shared,
            master,
            unbindable,
        },
        super_options,
        mount_options,
        propagate_from,
    })
}

fn take<'a>(
    fields: &mut impl Iterator<Item = &'a [u8]>,
    line: usize,
    field: &'static str,
) -> Result<&'a [u8], LineError> {
    fields.next().ok_or(LineError::MissingField { line, field })
}

fn number<T: std::str::FromStr>(
    field: &[u8],
    line: usize,
    name: &'static str,
) -> Result<T, LineError> {
    std::str::from_utf8(field)
        .ok()
        // FromStr for integers accepts a leading '+'; the kernel never prints one.
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LineError::BadField {
            line,
            field: name,
            value: String::from_utf8_lossy(field).into_owned(),
        })
}

fn device(field: &[u8], line: usize) -> Result<Dev, LineError> {
    let bad = || LineError::BadField {
        line,
        field: "major:minor",
        value: String::from_utf8_lossy(field).into_owned(),
    };
    let colon = field.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let major = number(&field[..colon], line, "major:minor").map_err(|_| bad())?;
    let minor = number(&field[colon + 1..], line, "major:minor").map_err(|_| bad())?;
    Ok(Dev { major, minor })
}

/// Undoes the kernel's `\ooo` escapes (three octal digits, `\000`–`\377`).
/// A backslash not followed by such a triplet is kept as is: the kernel
/// always escapes `\` itself, so that only happens with foreign input.
pub fn unescape(field: &[u8]) -> PathBytes {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(byte) = octal_triplet(&field[i + 1..]) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    PathBytes(out)
}

fn octal_triplet(s: &[u8]) -> Option<u8> {
    let digits = s.get(..3)?;
    if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
    u8::try_from(value).ok()
}

/// Escapes bytes the way the kernel does for mountinfo paths: ` `, `\t`,
/// `\n` and `\` become `\ooo`. The inverse of [`unescape`] on any input.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &[u8] = b"3967 3441 0:639 / /var/lib/docker/overlay/cd38/merged rw,relatime shared:415 - overlay overlay rw,lowerdir=/var/lib/docker/overlay/125d/root,upperdir=/var/lib/docker/overlay/cd38/upper,workdir=/var/lib/docker/overlay/cd38/work";

    #[test]
    fn parses_the_field_report_line() {
        let m = parse_line(DOCKER, 1).unwrap();
        assert_eq!(m.entry.mount_id, 3967);
        assert_eq!(m.entry.parent_id, 3441);
        assert_eq!(
            m.entry.dev,
            Dev {
                major: 0,
                minor: 639
            }
        );
        assert_eq!(m.entry.root, PathBytes::from("/"));
        assert_eq!(
            m.entry.mount_point,
            PathBytes::from("/var/lib/docker/overlay/cd38/merged")
        );
        assert_eq!(m.mount_options, PathBytes::from("rw,relatime"));
        assert_eq!(m.entry.shared, Some(415));
        assert_eq!(m.entry.master, None);
        assert!(!m.entry.unbindable);
        assert_eq!(m.entry.fstype, "overlay");
        assert_eq!(m.entry.source, PathBytes::from("overlay"));
        assert!(m.super_options.as_bytes().starts_with(b"rw,lowerdir="));
    }

    #[test]
    fn parses_the_man_page_example() {
        let m = parse_line(
            b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
            1,
        )
        .unwrap();
        assert_eq!(
            m.entry.dev,
            Dev {
                major: 98,
                minor: 0
            }
        );
        assert_eq!(m.entry.root, PathBytes::from("/mnt1"));
        assert_eq!(m.entry.master, Some(1));
        assert_eq!(m.entry.source, PathBytes::from("/dev/root"));
        assert_eq!(m.super_options, PathBytes::from("rw,errors=continue"));
    }

    #[test]
    fn every_optional_field() {
        let m = parse_line(
            b"1 2 0:5 / /x rw shared:3 master:4 propagate_from:5 unbindable future:9 - tmpfs tmpfs rw",
            1,
        )
        .unwrap();
        assert_eq!(m.entry.shared, Some(3));
        assert_eq!(m.entry.master, Some(4));
        assert_eq!(m.propagate_from, Some(5));
        assert!(m.entry.unbindable);
    }

    #[test]
    fn no_optional_fields() {
        let m = parse_line(b"22 27 0:21 / /proc rw,relatime - proc proc rw", 1).unwrap();
        assert_eq!(
            (m.entry.shared, m.entry.master, m.propagate_from),
            (None, None, None)
        );
    }

    #[test]
    fn nsfs_mount() {
        let m = parse_line(
            b"700 30 0:4 mnt:[4026532301] /run/ns/a rw - nsfs nsfs rw",
            1,
        )
        .unwrap();
        assert_eq!(m.entry.fstype, "nsfs");
        assert_eq!(m.entry.root, PathBytes::from("mnt:[4026532301]"));
    }

    #[test]
    fn unescapes_paths_source_and_fstype() {
        let m = parse_line(
            b"1 2 0:5 /a\\134b /mnt/x\\040y\\011z\\012w\\377 rw - fuse\\040x my\\040src rw,opt=a\\040b",
            7,
        )
        .unwrap();
        assert_eq!(m.entry.root.as_bytes(), b"/a\\b");
        assert_eq!(m.entry.mount_point.as_bytes(), b"/mnt/x y\tz\nw\xff");
        assert_eq!(m.entry.fstype, "fuse x");
        assert_eq!(m.entry.source.as_bytes(), b"my src");
        // Super options stay as the kernel printed them.
        assert_eq!(m.super_options.as_bytes(), b"rw,opt=a\\040b");
    }

    #[test]
    fn non_utf8_bytes_pass_through_unescaped() {
        let m = parse_line(b"1 2 0:5 / /caf\xe9 rw - tmpfs tmpfs rw", 1).unwrap();
        assert_eq!(m.entry.mount_point.as_bytes(), b"/caf\xe9");
    }

    #[test]
    fn empty_source_is_a_field() {
        let m = parse_line(b"1 2 0:5 / /x rw - tmpfs  rw", 1).unwrap();
        assert!(m.entry.source.is_empty());
        assert_eq!(m.super_options, PathBytes::from("rw"));
    }

    #[test]
    fn stray_backslashes_are_kept() {
        assert_eq!(unescape(b"a\\b").as_bytes(), b"a\\b");
        assert_eq!(unescape(b"a\\").as_bytes(), b"a\\");
        assert_eq!(unescape(b"a\\04").as_bytes(), b"a\\04");
        assert_eq!(unescape(b"a\\400").as_bytes(), b"a\\400");
        assert_eq!(unescape(b"a\\0409").as_bytes(), b"a 9");
        assert_eq!(unescape(b"\\000").as_bytes(), b"\0");
    }

    #[test]
    fn malformed_lines_name_their_line_and_are_skipped() {
        let text = b"22 27 0:21 / /proc rw - proc proc rw\n\
                     garbage\n\
                     23 27 0:22 / /sys rw - sysfs sysfs rw\n\
                     24 27 0:x / /dev rw - devtmpfs devtmpfs rw\n\
                     25 27 0:6 / /dev rw shared:1\n\
                     26 27 0:6 / /dev rw shared:q - devtmpfs devtmpfs rw\n\
                     27 27 0:6 / /dev rw - devtmpfs devtmpfs\n\
                     +28 27 0:6 / /dev rw - devtmpfs devtmpfs rw\n\
                     29 27 0:6 / /dev rw -  devtmpfs rw\n";
        let parsed = parse(text);
        assert_eq!(parsed.mounts.len(), 2);
        assert_eq!(
            parsed.errors,
            vec![
                LineError::BadField {
                    line: 2,
                    field: "mount ID",
                    value: "garbage".into()
                },
                LineError::BadField {
                    line: 4,
                    field: "major:minor",
                    value: "0:x".into()
                },
                LineError::NoSeparator { line: 5 },
                LineError::BadField {
                    line: 6,
                    field: "shared:N",
                    value: "q".into()
                },
                LineError::MissingField {
                    line: 7,
                    field: "super options"
                },
                LineError::BadField {
                    line: 8,
                    field: "mount ID",
                    value: "+28".into()
                },
                LineError::MissingField {
                    line: 9,
                    field: "filesystem type"
                },
            ]
        );
        assert!(parsed.errors[0].to_string().starts_with("line 2:"));
    }

    #[test]
    fn truncated_lines_never_panic() {
        // Every prefix of a valid line either parses or errors.
        for end in 0..DOCKER.len() {
            let _ = parse_line(&DOCKER[..end], 1);
        }
        let _ = parse(b"\n\n\n");
        let _ = parse(b" ");
        let _ = parse(b"\\");
    }

    #[test]
    fn every_single_byte_round_trips() {
        for b in 0..=255u8 {
            let path = [b'/', b, b'x'];
            assert_eq!(unescape(&escape(&path)).as_bytes(), &path, "byte {b:#04x}");
        }
    }

    /// xorshift64*: deterministic, so a failure is reproducible from the seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Bytes biased towards the ones the kernel escapes and towards
        /// backslash-digit sequences that look like escapes.
        fn bytes(&mut self) -> Vec<u8> {
            let len = (self.next() % 40) as usize;
            (0..len)
                .map(|_| match self.next() % 8 {
                    0 => b' ',
                    1 => b'\\',
                    2 => b'\n',
                    3 => b'\t',
                    4 => b'0' + (self.next() % 8) as u8,
                    _ => self.next() as u8,
                })
                .collect()
        }
    }

    #[test]
    fn escaping_then_parsing_round_trips_arbitrary_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..20_000 {
            let root = rng.bytes();
            let mount_point = rng.bytes();
            let source = rng.bytes();
            let mut line = b"100 1 8:3 ".to_vec();
            line.extend(escape(&root));
            line.push(b' ');
            line.extend(escape(&mount_point));
            line.extend_from_slice(b" rw,relatime shared:7 - ext4 ");
            line.extend(escape(&source));
            line.extend_from_slice(b" rw,data=ordered");
            // Inside a file, next to other lines.
            let mut file = b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".to_vec();
            file.extend_from_slice(&line);
            file.push(b'\n');

            let parsed = parse(&file);
            assert!(parsed.errors.is_empty(), "case {case}: {:?}", parsed.errors);
            let m = &parsed.mounts[1].entry;
            assert_eq!(m.root.as_bytes(), &root[..], "case {case}");
            assert_eq!(m.mount_point.as_bytes(), &mount_point[..], "case {case}");
            assert_eq!(m.source.as_bytes(), &source[..], "case {case}");
            assert_eq!(m.shared, Some(7));
            assert_eq!(
                parsed.mounts[1].super_options,
                PathBytes::from("rw,data=ordered")
            );
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let mut junk = DOCKER.to_vec();
            for _ in 0..(rng.next() % 6) {
                let at = (rng.next() as usize) % junk.len();
                junk[at] = rng.next() as u8;
            }
            let _ = parse(&junk);
        }
    }
}
