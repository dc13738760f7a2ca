//! The last resort for a namespace no process is in, on kernels without
//! listmount/statmount namespace ids (< 6.11, e.g. RHEL/CentOS 7): enter it
//! through the nsfs bind mount that keeps it alive and read mountinfo from
//! inside, with util-linux's nsenter(1), which exists there too.
//!
//! A child process, not `setns` in a thread of ours: setns(CLONE_NEWNS)
//! needs an unshared fs_struct (setns(2), EINVAL), and the daemon is
//! multi-threaded.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long nsenter + cat may take before we give up on that namespace.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `nsenter --mount=<ns_file> cat /proc/self/mountinfo`: the table of the
/// namespace `ns_file` refers to, with paths relative to its root (setns
/// moves the caller's root and cwd to the namespace's root).
pub fn read_mountinfo(ns_file: &Path) -> io::Result<Vec<u8>> {
    let mut arg = b"--mount=".to_vec();
    arg.extend_from_slice(ns_file.as_os_str().as_encoded_bytes());
    let mut child = Command::new("nsenter")
        .arg(OsString::from_vec(arg))
        .args(["cat", "/proc/self/mountinfo"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout pipe"))?;
    // Read on a helper thread so a hung child cannot hang the scan.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            // Kill our own child by its handle; reap it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, "nsenter timed out"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader
        .join()
        .map_err(|_| io::Error::other("reader thread panicked"))??;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        return Err(io::Error::other(format!(
            "nsenter failed ({status}): {}",
            err.trim()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own namespace through /proc/self/ns/mnt: the same table as ours.
    /// Needs root (setns needs CAP_SYS_ADMIN); skips otherwise.
    #[test]
    fn reads_own_namespace() {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            return eprintln!("skipped: needs root");
        }
        let text = match read_mountinfo(Path::new("/proc/self/ns/mnt")) {
            Ok(t) => t,
            Err(err) => return eprintln!("skipped: {err}"),
        };
        let theirs = crate::procfs::mountinfo::parse(&text).into_entries();
        let ours = crate::procfs::mountinfo::parse(&std::fs::read("/proc/self/mountinfo").unwrap())
            .into_entries();
        let ids =
            |t: &[monitor_model::MountEntry]| t.iter().map(|m| m.mount_id).collect::<Vec<_>>();
        assert_eq!(ids(&theirs), ids(&ours));
    }
}
