//! Live unit state from `systemctl`, used only when systemd is PID 1 (the
//! unit files alone are the audit's source otherwise). The parsers are pure;
//! [`query`] runs `systemctl`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use super::audit::LiveUnit;

/// Whether PID 1 is systemd (`/proc/1/comm`; `/proc/1/exe` may be
/// unreadable even for root, PLATFORM.md).
pub fn is_pid1() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// Names of active service units from
/// `systemctl list-units --type=service --plain --no-legend`.
pub fn parse_list_units(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            // A leading "●" marks failed units in some versions.
            let l = l.trim_start_matches(['●', '*', ' ']);
            l.split_whitespace().next()
        })
        .filter(|n| n.ends_with(".service"))
        .map(str::to_string)
        .collect()
}

/// `systemctl show -p Id,ActiveState,MainPID,ActiveEnterTimestampMonotonic`
/// output: blocks of `Key=Value` separated by blank lines.
pub fn parse_show(text: &str) -> BTreeMap<String, LiveUnit> {
    let mut out = BTreeMap::new();
    let mut id: Option<String> = None;
    let mut cur = LiveUnit::default();
    let mut flush = |id: &mut Option<String>, cur: &mut LiveUnit| {
        if let Some(id) = id.take() {
            out.insert(id, std::mem::take(cur));
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut id, &mut cur);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "Id" => id = Some(v.to_string()),
            "ActiveState" => cur.active = matches!(v, "active" | "reloading" | "activating"),
            "MainPID" => cur.main_pid = v.parse().ok().filter(|p| *p != 0),
            "ActiveEnterTimestampMonotonic" => {
                cur.active_enter_us = v.parse().ok().filter(|t| *t != 0)
            }
            _ => {}
        }
    }
    flush(&mut id, &mut cur);
    out
}

fn systemctl(args: &[&str]) -> Option<String> {
    let out = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|err| tracing::warn!(%err, "cannot run systemctl"))
        .ok()?;
    if !out.status.success() {
        tracing::warn!(status = %out.status, ?args, "systemctl failed");
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Active services, then the live state of `units` plus those.
pub fn query(units: &[String]) -> Option<BTreeMap<String, LiveUnit>> {
    let active = parse_list_units(&systemctl(&[
        "list-units",
        "--type=service",
        "--state=active",
        "--plain",
        "--no-legend",
        "--no-pager",
        "--full",
    ])?);
    let mut names: Vec<String> = units.iter().chain(&active).cloned().collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Some(BTreeMap::new());
    }
    let mut args = vec![
        "show",
        "--no-pager",
        "--property=Id,ActiveState,MainPID,ActiveEnterTimestampMonotonic",
        "--",
    ];
    args.extend(names.iter().map(String::as_str));
    Some(parse_show(&systemctl(&args)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_units() {
        let text = "ntpd.service       loaded active running Network Time Service\n\
                    ceph-osd@0.service loaded active running Ceph object storage daemon osd.0\n\
                    ● bad.service loaded failed failed x\n";
        assert_eq!(
            parse_list_units(text),
            vec!["ntpd.service", "ceph-osd@0.service", "bad.service"]
        );
    }

    #[test]
    fn show_blocks() {
        let text = "Id=docker.service\nActiveState=active\nMainPID=812\nActiveEnterTimestampMonotonic=9000000\n\n\
                    Id=ntpd.service\nActiveState=inactive\nMainPID=0\nActiveEnterTimestampMonotonic=0\n";
        let m = parse_show(text);
        assert_eq!(
            m["docker.service"],
            LiveUnit {
                active: true,
                main_pid: Some(812),
                active_enter_us: Some(9_000_000)
            }
        );
        assert_eq!(m["ntpd.service"], LiveUnit::default());
    }
}
