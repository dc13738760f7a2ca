//! The timeline as one self-contained HTML file: inline CSS and SVG, no
//! script, no fonts or images fetched. Lifelines run left to right on a time
//! axis (long quiet stretches are cut out and marked, so seconds of activity
//! hours apart stay readable); leak windows are red, findings are marked and
//! link to the step list below, which tells the same story in words.
//!
//! Every drawn element carries `class` and `data-*` attributes naming what
//! it is (`lifeline`/`data-kind`/`data-id`, `marker`/`data-kind`/
//! `data-finding`, `leak-window`), so tests and scripts can read the picture.
//!
//! Pure: a `Timeline` in, a `String` out.

use std::fmt::Write as _;

use super::event::rfc3339_ns;
use super::schema::{Lifeline, Marker, Span, Step, Timeline};

const WIDTH: f64 = 1240.0;
const LABEL_W: f64 = 360.0;
const PLOT_X0: f64 = LABEL_W + 16.0;
const PLOT_X1: f64 = WIDTH - 36.0;
const AXIS_H: f64 = 64.0;
const LANE_H: f64 = 46.0;
/// Room kept at both ends of the plot for markers.
const EDGE_PAD: f64 = 14.0;
/// Least room between two clock labels on the axis.
const LABEL_GAP: f64 = 96.0;

/// Escapes text for HTML and SVG (element text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The time axis. Not to scale on purpose: the steps of a leak come in
/// bursts milliseconds apart, separated by minutes or days. Each gap between
/// two consecutive moments takes room growing with its logarithm, so order
/// is kept, every moment gets its own place and a day-long quiet stretch
/// takes a few centimetres; the gaps' real lengths are written on the axis.
#[derive(Debug)]
struct Axis {
    /// Distinct moments, in order, and where they are drawn.
    points: Vec<(i64, f64)>,
}

/// Room for a gap, in units: one for being distinct, plus its log-length.
/// Moments within the same millisecond share a place (two conversions of
/// one kernel time to wall time can differ by nanoseconds).
fn gap_weight(gap_ns: i64) -> f64 {
    let ms = gap_ns / 1_000_000;
    if ms <= 0 {
        return 0.0;
    }
    1.0 + (1.0 + ms as f64).ln()
}

/// The millisecond a moment is drawn at.
fn ms(t: i64) -> i64 {
    t.div_euclid(1_000_000) * 1_000_000
}

impl Axis {
    fn new(times: Vec<i64>) -> Axis {
        let mut times: Vec<i64> = times.into_iter().map(ms).collect();
        times.sort_unstable();
        times.dedup();
        let inner0 = PLOT_X0 + EDGE_PAD;
        let inner1 = PLOT_X1 - EDGE_PAD;
        if times.len() <= 1 {
            let t = times.first().copied().unwrap_or(0);
            return Axis {
                points: vec![(t, (inner0 + inner1) / 2.0)],
            };
        }
        let weights: Vec<f64> = times.windows(2).map(|w| gap_weight(w[1] - w[0])).collect();
        let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut x = inner0;
        let mut points = vec![(times[0], x)];
        for (t, w) in times[1..].iter().zip(&weights) {
            x += w / total * (inner1 - inner0);
            points.push((*t, x));
        }
        Axis { points }
    }

    fn first(&self) -> i64 {
        self.points.first().map_or(0, |p| p.0)
    }

    fn last(&self) -> i64 {
        self.points.last().map_or(0, |p| p.0)
    }

    fn x(&self, t: i64) -> f64 {
        let t = ms(t);
        match self.points.binary_search_by_key(&t, |p| p.0) {
            Ok(i) => self.points[i].1,
            Err(0) => self.points.first().map_or(PLOT_X0, |p| p.1),
            Err(i) if i >= self.points.len() => self.points.last().map_or(PLOT_X1, |p| p.1),
            Err(i) => {
                let (t0, x0) = self.points[i - 1];
                let (t1, x1) = self.points[i];
                let f = gap_weight(t - t0) / gap_weight(t1 - t0).max(f64::MIN_POSITIVE);
                x0 + f.clamp(0.0, 1.0) * (x1 - x0)
            }
        }
    }
}

/// `13:52:33.004`.
fn clock(t: i64) -> String {
    let full = rfc3339_ns(t); // 2026-11-27T13:52:33.004Z
    full.get(11..23).unwrap_or("").to_string()
}

fn human_duration(ns: i64) -> String {
    let secs = ns / 1_000_000_000;
    if ns < 1_000_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else if secs < 10 {
        format!("{:.1} s", ns as f64 / 1e9)
    } else if secs >= 86_400 {
        format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600)
    } else if secs >= 3600 {
        format!("{} h {} min", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{secs} s")
    }
}

/// The shape of a marker, centred on (0, 0).
fn shape(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "risk" => ("<path d=\"M0,-8 L8,6 L-8,6 Z\"/>", "m-risk"),
        "leak" => ("<path d=\"M0,-9 L9,0 L0,9 L-9,0 Z\"/>", "m-leak"),
        "failed_removal"
        | "umount_failed"
        | "rmdir_failed"
        | "container_removal_failed"
        | "mount_failed" => (
            "<path d=\"M-7,-7 L7,7 M7,-7 L-7,7\" class=\"stroke\"/>",
            "m-fail",
        ),
        "removal_warning" => ("<path d=\"M0,-8 L8,6 L-8,6 Z\"/>", "m-warn"),
        "resolved" => (
            "<circle r=\"8\"/><path d=\"M-4,0 L-1,4 L5,-4\" class=\"tick\"/>",
            "m-resolved",
        ),
        "ns_created" => ("<circle r=\"6\"/>", "m-ns"),
        "propagation_changed" => (
            "<rect x=\"-5\" y=\"-5\" width=\"10\" height=\"10\"/>",
            "m-prop",
        ),
        "host_unmounted" | "copy_unmounted" | "rmdir" => (
            "<rect x=\"-2\" y=\"-10\" width=\"4\" height=\"20\"/>",
            "m-umount",
        ),
        "process_exited" => (
            "<path d=\"M-5,-5 L5,5 M5,-5 L-5,5\" class=\"stroke\"/>",
            "m-exit",
        ),
        "process_forked" => ("<circle r=\"3.5\"/>", "m-fork"),
        "remedy_applied" => (
            "<path d=\"M-7,-7 L7,-7 L7,7 L-7,7 Z M-4,0 L-1,4 L5,-4\" class=\"stroke\"/>",
            "m-remedy",
        ),
        "container_started" | "container_seen" => ("<path d=\"M-5,-7 L7,0 L-5,7 Z\"/>", "m-start"),
        "container_stopped" => (
            "<rect x=\"-6\" y=\"-6\" width=\"12\" height=\"12\"/>",
            "m-stop",
        ),
        "container_removed" => (
            "<path d=\"M-6,-6 L6,6 M6,-6 L-6,6\" class=\"stroke\"/>",
            "m-removed",
        ),
        _ => ("<circle r=\"4\"/>", "m-other"),
    }
}

const LEGEND: &[(&str, &str)] = &[
    (
        "ns_created",
        "a mount namespace was created (a copy of the mounts was made)",
    ),
    ("risk", "risk: a copy the host's umount will not reach"),
    (
        "host_unmounted",
        "an umount (or mountpoint removal) succeeded",
    ),
    ("leak", "leak: the host unmounted it, a copy survived"),
    (
        "failed_removal",
        "something failed: umount, rmdir or the runtime's removal",
    ),
    ("resolved", "resolved: the last copy is gone"),
    ("remedy_applied", "mountleak fix carried out a remedy"),
    ("process_exited", "a process exited"),
    ("container_started", "container started"),
    ("container_stopped", "container stopped"),
];

const CSS: &str = r#"
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2330;background:#fff;margin:24px 32px;max-width:1300px}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:17px;margin:26px 0 8px}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em;background:#f1f3f7;padding:1px 4px;border-radius:3px;word-break:break-all}
.status{font-size:16px;padding:10px 14px;border-radius:6px;margin:10px 0;border-left:6px solid}
.status-leaking,.status-removal_failed{background:#fdecec;border-color:#c62828}
.status-at_risk{background:#fff6e0;border-color:#e6a100}
.status-resolved{background:#e9f6ec;border-color:#2e7d32}
.status-no_leak_seen{background:#eef1f6;border-color:#6b7a90}
.meta{color:#5b6475;font-size:13px}
.explain{max-width:950px}
.legend{display:flex;flex-wrap:wrap;gap:6px 22px;font-size:13px;margin:8px 0 4px}
.legend span{display:inline-flex;align-items:center;gap:6px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
.lane-bg{fill:#f7f8fb}
.lane-label{font-size:13px;font-weight:600;fill:#1d2330}
.lane-detail{font-size:11px;fill:#5b6475}
.axis line{stroke:#c4cad6}
.axis line.minor{stroke:#e3e6ed}
.axis text.gap{fill:#8a93a5;font-size:10px}
.axis text{font-size:11px;fill:#5b6475}
.axis .date{font-weight:600;fill:#1d2330}
.baseline{stroke:#aab2c2;stroke-width:1;stroke-dasharray:3 3}
.span-running{fill:#4f7fd9}
.span-stopped{fill:#a9b8d6}
.span-mounted{fill:#5b9b6b}
.span-held{fill:#e0a23b}
.span-alive{fill:#8d99ae}
.span-leak{fill:url(#hatch);stroke:#c62828;stroke-width:1.5}
.leak-window{fill:#c62828;opacity:.07}
.open-end{fill:#1d2330;font-size:12px}
.unknown-start{fill:#5b6475;font-size:12px}
.marker .stroke,.marker .tick{fill:none;stroke-width:3;stroke-linecap:round}
.m-risk{fill:#e6a100;stroke:#7a5600}
.m-leak{fill:#c62828;stroke:#5c0d0d}
.m-fail .stroke{stroke:#b71c1c}
.m-warn{fill:#fff;stroke:#e65100;stroke-width:2}
.m-resolved circle{fill:#2e7d32}.m-resolved .tick{stroke:#fff}
.m-ns{fill:#1565c0;stroke:#fff;stroke-width:1.5}
.m-prop{fill:#64b5f6;stroke:#0d47a1}
.m-umount{fill:#1d2330}
.m-exit .stroke{stroke:#37474f}
.m-fork{fill:#37474f}
.m-start{fill:#1b5e20}
.m-stop{fill:#546e7a}
.m-removed .stroke{stroke:#546e7a}
.m-other{fill:#6b7a90}
.m-remedy .stroke{stroke:#2e7d32}
.marker-label{font-size:11px;font-weight:700}
.label-leak{fill:#c62828}.label-risk{fill:#8a6100}.label-resolved{fill:#2e7d32}.label-failed_removal{fill:#b71c1c}.label-removal_warning{fill:#e65100}
.daemon line{stroke:#6b7a90;stroke-dasharray:2 4}
.daemon text{font-size:10px;fill:#5b6475}
ol.steps{padding-left:0;list-style:none;counter-reset:step}
ol.steps li{padding:5px 8px;border-bottom:1px solid #eceff4;display:grid;grid-template-columns:2.4em 15em 1fr;gap:8px}
ol.steps li::before{counter-increment:step;content:counter(step);color:#8a93a5;text-align:right}
ol.steps li:target{background:#fffbe6}
ol.steps time{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px;color:#5b6475}
ol.steps .k-leak,ol.steps .k-failed_removal,ol.steps .k-umount_failed,ol.steps .k-rmdir_failed,ol.steps .k-container_removal_failed{background:#fdecec}
ol.steps .k-risk,ol.steps .k-removal_warning{background:#fff6e0}
ol.steps .k-resolved{background:#e9f6ec}
.notes{color:#5b6475;font-size:13px}
"#;

fn marker_svg(kind: &str) -> String {
    let (body, class) = shape(kind);
    format!("<g class=\"{class}\">{body}</g>")
}

/// The step a marker stands for (same time and kind), for its link.
fn step_index(steps: &[Step], m: &Marker) -> Option<usize> {
    steps
        .iter()
        .position(|s| s.time_ns == m.time_ns && s.kind == m.kind)
}

fn all_times(t: &Timeline) -> Vec<i64> {
    let mut times: Vec<i64> = t.steps.iter().map(|s| s.time_ns).collect();
    for l in &t.lifelines {
        times.extend(l.start_ns);
        times.extend(l.end_ns);
        for s in &l.spans {
            times.extend(s.start_ns);
            times.extend(s.end_ns);
        }
        times.extend(l.markers.iter().map(|m| m.time_ns));
    }
    times
}

pub fn render(t: &Timeline) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("mountleak timeline: {}", t.target.query);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"{}\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&t.generator),
        esc(&title)
    );
    let kind = match t.target.kind.as_str() {
        "mnt_ns" => "mount namespace",
        "path" => "mount",
        other => other,
    };
    let _ = write!(
        h,
        "<header>\n<h1>How {} <code>{}</code> ended up held</h1>\n\
         <p class=\"status status-{}\" id=\"status\"><strong>{}</strong> — {}</p>\n\
         <p class=\"meta\">{}Recorded by mountleak's event store; this page was made {} by {}.{} Times are UTC.</p>\n</header>\n",
        esc(kind),
        esc(&t.target.query),
        esc(&t.status),
        esc(&t.status.replace('_', " ").to_uppercase()),
        esc(&t.summary),
        t.host.as_ref().map(|h| format!("Host <code>{}</code>. ", esc(h))).unwrap_or_default(),
        esc(&t.generated_at),
        esc(&t.generator),
        match (&t.since, &t.until) {
            (None, None) => String::new(),
            (s, u) => format!(
                " Window: {} to {}.",
                esc(s.as_deref().unwrap_or("the beginning")),
                esc(u.as_deref().unwrap_or("the end"))
            ),
        }
    );
    h.push_str(
        "<section class=\"explain\">\n<h2>How to read this</h2>\n<p>A container's filesystem is <em>mounted</em> on the host. \
         When another process creates its own <em>mount namespace</em> (systemd's <code>PrivateTmp=</code>, \
         <code>unshare -m</code>, …) it gets a <em>copy</em> of every mount, this one included. If that copy does not \
         follow the host's changes (\"private\" propagation), it stays mounted after the host unmounts the container: \
         that is a <strong>leak</strong>, and removing the container can fail (\"device or resource busy\") or leave \
         its disk space in use.</p>\n<p>Time runs from left to right. Each row is one thing: the container, each of its \
         mounts, each namespace that held a copy and the processes in it. A bar is how long it existed, a red hatched \
         bar is a leak window (the host had let go, the copy had not), and symbols mark what happened; hover one for \
         details or click it to jump to the step below. <span class=\"unknown-start\">◀…</span> means it began before \
         the first record, <span class=\"open-end\">…▶</span> that it was still so at the last one. The time axis is \
         not to scale: quiet stretches are shortened (their real length is written on the axis, ↔) so that steps \
         milliseconds apart can still be told apart; the clock time of each step is along the top.</p>\n</section>\n",
    );
    // Legend.
    h.push_str("<section class=\"legend\" id=\"legend\" aria-label=\"legend\">\n");
    for (cls, text) in [
        ("span-running", "container running"),
        ("span-mounted", "mounted in the host"),
        ("span-held", "namespace holds a copy"),
        ("span-alive", "process alive"),
        ("span-leak", "leak window"),
    ] {
        let _ = writeln!(
            h,
            "<span><svg width=\"28\" height=\"14\" aria-hidden=\"true\"><rect x=\"1\" y=\"2\" width=\"26\" height=\"10\" rx=\"2\" class=\"{cls}\"/></svg>{}</span>",
            esc(text)
        );
    }
    for (kind, text) in LEGEND {
        let _ = writeln!(
            h,
            "<span class=\"marker\" data-legend=\"{kind}\"><svg width=\"22\" height=\"22\" viewBox=\"-11 -11 22 22\" aria-hidden=\"true\">{}</svg>{}</span>",
            marker_svg(kind),
            esc(text)
        );
    }
    h.push_str("</section>\n");
    h.push_str(&svg(t));
    // Steps.
    h.push_str("<section>\n<h2>The story, step by step</h2>\n<ol class=\"steps\" id=\"steps\">\n");
    for (i, s) in t.steps.iter().enumerate() {
        let _ = writeln!(
            h,
            "<li id=\"step-{i}\" class=\"step k-{}\" data-kind=\"{}\"{}><time datetime=\"{}\">{}</time><span>{}</span></li>",
            esc(&s.kind),
            esc(&s.kind),
            s.finding
                .as_ref()
                .map(|f| format!(" data-finding=\"{}\"", esc(f)))
                .unwrap_or_default(),
            esc(&s.time),
            esc(s.time.replace('T', " ").trim_end_matches('Z')),
            esc(&s.text)
        );
    }
    h.push_str("</ol>\n</section>\n");
    if !t.notes.is_empty() {
        h.push_str("<section class=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
        for n in &t.notes {
            let _ = writeln!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>\n</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn svg(t: &Timeline) -> String {
    let axis = Axis::new(all_times(t));
    let lanes = &t.lifelines;
    let height = AXIS_H + LANE_H * lanes.len().max(1) as f64 + 24.0;
    let mut g = String::new();
    let _ = write!(
        g,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"lifelines on a time axis\" \
         width=\"{WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH} {height:.0}\">\n\
         <defs><pattern id=\"hatch\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
         <rect width=\"8\" height=\"8\" fill=\"#f4b4b4\"/><rect width=\"4\" height=\"8\" fill=\"#d84343\"/></pattern></defs>\n"
    );
    // Lane backgrounds.
    for (i, _) in lanes.iter().enumerate() {
        if i % 2 == 0 {
            let y = AXIS_H + i as f64 * LANE_H;
            let _ = writeln!(
                g,
                "<rect class=\"lane-bg\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{LANE_H}\"/>"
            );
        }
    }
    // Leak windows across every lane.
    let bottom = AXIS_H + LANE_H * lanes.len() as f64;
    for l in lanes.iter().filter(|l| l.kind == "mount") {
        for s in l.spans.iter().filter(|s| s.kind == "leak") {
            let x0 = axis.x(s.start_ns.unwrap_or(axis.first()));
            let x1 = axis.x(s.end_ns.unwrap_or(axis.last())).max(x0 + 2.0);
            let _ = writeln!(
                g,
                "<rect class=\"leak-window\" data-lifeline=\"{}\" x=\"{x0:.1}\" y=\"{AXIS_H}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
                esc(&l.id),
                x1 - x0,
                bottom - AXIS_H,
                esc(&s.label)
            );
        }
    }
    g.push_str(&axis_svg(&axis, bottom));
    // Daemon starts and stops, across everything.
    for s in t.steps.iter().filter(|s| {
        matches!(
            s.kind.as_str(),
            "daemon_started" | "daemon_stopped" | "events_lost" | "store_gap"
        )
    }) {
        let x = axis.x(s.time_ns);
        let _ = writeln!(
            g,
            "<g class=\"daemon\" data-kind=\"{}\"><title>{} — {}</title><line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/></g>",
            esc(&s.kind),
            esc(&s.time),
            esc(&s.text),
            AXIS_H - 6.0
        );
    }
    for (i, l) in lanes.iter().enumerate() {
        g.push_str(&lane_svg(t, &axis, l, AXIS_H + i as f64 * LANE_H));
    }
    g.push_str("</svg>\n");
    g
}

fn axis_svg(axis: &Axis, bottom: f64) -> String {
    let mut g = String::from("<g class=\"axis\">\n");
    let _ = writeln!(
        g,
        "<text x=\"{:.1}\" y=\"14\" text-anchor=\"end\">time (UTC), not to scale: quiet stretches are shortened, their length is written between the marks</text>",
        PLOT_X1
    );
    let mut last_label = f64::MIN;
    let mut last_date = String::new();
    for (i, &(t, x)) in axis.points.iter().enumerate() {
        let labelled = x - last_label >= LABEL_GAP;
        let _ = writeln!(
            g,
            "<line class=\"{}\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>",
            if labelled { "tick" } else { "tick minor" },
            AXIS_H - if labelled { 14.0 } else { 6.0 }
        );
        if labelled {
            let _ = writeln!(
                g,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                AXIS_H - 18.0,
                esc(&clock(t))
            );
            let date = rfc3339_ns(t).get(..10).unwrap_or("").to_string();
            if date != last_date {
                let _ = writeln!(
                    g,
                    "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"date\">{}</text>",
                    AXIS_H - 32.0,
                    esc(&date)
                );
                last_date = date;
            }
            last_label = x;
        }
        // The real length of a noticeable gap, where there is room for it.
        if let Some(&(t1, x1)) = axis.points.get(i + 1) {
            let gap = t1 - t;
            if gap >= 1_000_000_000 && x1 - x >= 44.0 {
                let _ = writeln!(
                    g,
                    "<text class=\"gap\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">↔ {}</text>",
                    (x + x1) / 2.0,
                    AXIS_H - 4.0,
                    esc(&human_duration(gap))
                );
            }
        }
    }
    g.push_str("</g>\n");
    g
}

fn span_svg(axis: &Axis, s: &Span, y: f64) -> String {
    let x0 = axis.x(s.start_ns.unwrap_or(axis.first()));
    let mut x1 = axis.x(s.end_ns.unwrap_or(axis.last()));
    if s.end_ns.is_none() {
        x1 = PLOT_X1;
    }
    let x0 = if s.start_ns.is_none() { PLOT_X0 } else { x0 };
    let w = (x1 - x0).max(3.0);
    let (hgt, dy) = if s.kind == "leak" {
        (16.0, -8.0)
    } else {
        (12.0, -6.0)
    };
    let mut out = format!(
        "<rect class=\"span span-{}\" data-kind=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{hgt}\" rx=\"3\"><title>{}: {} → {}</title></rect>",
        esc(&s.kind),
        esc(&s.kind),
        y + dy,
        esc(&s.label),
        esc(&s.start_ns.map(rfc3339_ns).unwrap_or_else(|| "before the first record".into())),
        esc(&s.end_ns.map(rfc3339_ns).unwrap_or_else(|| "still so at the last record".into())),
    );
    if s.start_ns.is_none() {
        let _ = write!(
            out,
            "<text class=\"unknown-start\" x=\"{:.1}\" y=\"{:.1}\">◀…</text>",
            x0 - 16.0,
            y + 4.0
        );
    }
    if s.end_ns.is_none() {
        let _ = write!(
            out,
            "<text class=\"open-end\" x=\"{:.1}\" y=\"{:.1}\">…▶</text>",
            x1 + 2.0,
            y + 4.0
        );
    }
    out
}

fn lane_svg(t: &Timeline, axis: &Axis, l: &Lifeline, top: f64) -> String {
    let mid = top + LANE_H / 2.0 + 4.0;
    let mut g = format!(
        "<g class=\"lifeline\" data-kind=\"{}\" data-id=\"{}\">\n",
        esc(&l.kind),
        esc(&l.id)
    );
    let label = shorten(&l.label, 46);
    let _ = writeln!(
        g,
        "<text class=\"lane-label\" x=\"10\" y=\"{:.1}\"><title>{}</title>{}</text>",
        top + 19.0,
        esc(&l.label),
        esc(&label)
    );
    if let Some(d) = &l.detail {
        let _ = writeln!(
            g,
            "<text class=\"lane-detail\" x=\"10\" y=\"{:.1}\"><title>{}</title>{}</text>",
            top + 35.0,
            esc(d),
            esc(&cut_end(d, 62))
        );
    }
    let _ = writeln!(
        g,
        "<line class=\"baseline\" x1=\"{PLOT_X0}\" y1=\"{mid:.1}\" x2=\"{PLOT_X1}\" y2=\"{mid:.1}\"/>"
    );
    // Plain spans first, leak windows over them.
    let mut spans: Vec<&Span> = l.spans.iter().collect();
    spans.sort_by_key(|s| s.kind == "leak");
    for s in spans {
        g.push_str(&span_svg(axis, s, mid));
        g.push('\n');
    }
    let mut last_label_x = f64::MIN;
    let mut slot = 0usize;
    for m in &l.markers {
        let x = axis.x(m.time_ns);
        let link = step_index(&t.steps, m)
            .map(|i| format!("#step-{i}"))
            .unwrap_or_else(|| "#steps".into());
        let text = step_index(&t.steps, m)
            .map(|i| t.steps[i].text.clone())
            .unwrap_or_else(|| m.label.clone());
        let _ = write!(
            g,
            "<a href=\"{link}\"><g class=\"marker\" data-kind=\"{}\"{} transform=\"translate({x:.1},{mid:.1})\"><title>{} — {}</title>{}</g></a>",
            esc(&m.kind),
            m.finding
                .as_ref()
                .map(|f| format!(" data-finding=\"{}\"", esc(f)))
                .unwrap_or_default(),
            esc(&rfc3339_ns(m.time_ns)),
            esc(&text),
            marker_svg(&m.kind)
        );
        if m.finding.is_some() {
            // Finding labels take turns above, higher, and below the line
            // when they would overlap.
            slot = if x - last_label_x < 70.0 {
                (slot + 1) % 3
            } else {
                0
            };
            let y = [mid - 13.0, mid - 24.0, mid + 22.0][slot];
            let _ = write!(
                g,
                "<text class=\"marker-label label-{}\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{}</text>",
                esc(&m.kind),
                esc(&m.label)
            );
            last_label_x = x;
        }
        g.push('\n');
    }
    g.push_str("</g>\n");
    g
}

/// Cuts the end off a long detail line.
fn cut_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Cuts the middle out of a long label (paths are long at the front and
/// tell the most at the end).
fn shorten(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max {
        return s.to_string();
    }
    let head = max / 2 - 1;
    let tail = max - head - 1;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::super::story::tests::{leak_timeline, NS, T0};
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        let html = render(&leak_timeline());
        assert!(html.starts_with("<!DOCTYPE html>"));
        for banned in ["<script", "src=", "@import", "url(http", "<link"] {
            assert!(!html.contains(banned), "{banned} in the page");
        }
        // The one xmlns is a name, not a fetch.
        assert_eq!(
            html.matches("http").count(),
            html.matches("http://www.w3.org/2000/svg").count()
        );
    }

    #[test]
    fn lifelines_markers_and_leak_windows_are_drawn() {
        let html = render(&leak_timeline());
        for id in [
            "container:c0ffee".to_string(),
            "mount:/var/lib/docker/overlay2/3f9a1c0e7b2d/merged".into(),
            format!("mnt_ns:{NS}"),
            "pid:1234".into(),
        ] {
            assert!(html.contains(&format!("data-id=\"{id}\"")), "{id}");
        }
        for kind in [
            "risk",
            "leak",
            "failed_removal",
            "resolved",
            "ns_created",
            "process_exited",
        ] {
            assert!(
                html.contains(&format!("class=\"marker\" data-kind=\"{kind}\"")),
                "{kind}"
            );
        }
        assert_eq!(html.matches("class=\"leak-window\"").count(), 1);
        assert!(html.contains("data-finding=\"ML-1\""));
        assert!(html.contains("How to read this"));
        assert_eq!(html.matches("<li id=\"step-").count(), 14);
    }

    #[test]
    fn text_is_escaped() {
        let mut t = leak_timeline();
        t.target.query = "<script>alert(1)</script>".into();
        t.steps[0].text = "a & b \"c\" <d>".into();
        let html = render(&t);
        assert!(!html.contains("<script>"));
        assert!(html.contains("a &amp; b &quot;c&quot; &lt;d&gt;"));
    }

    #[test]
    fn the_axis_keeps_order_and_separates_close_moments() {
        let hour = 3_600_000_000_000i64;
        let times = [
            T0,
            T0 + 1_000_000,
            T0 + 2_000_000,
            T0 + hour,
            T0 + hour + 2_000_000_000,
        ];
        let axis = Axis::new(times.to_vec());
        let xs: Vec<f64> = times.iter().map(|t| axis.x(*t)).collect();
        assert!(xs.windows(2).all(|w| w[1] - w[0] >= 20.0), "{xs:?}");
        assert!(xs[0] >= PLOT_X0 && xs[4] <= PLOT_X1);
        // The hour takes more room than a millisecond, but not all of it.
        assert!(xs[3] - xs[2] > xs[1] - xs[0]);
        assert!(xs[3] - xs[2] < (PLOT_X1 - PLOT_X0) * 0.6);
        // Between two moments, in between.
        let mid = axis.x(T0 + hour / 2);
        assert!(mid > xs[2] && mid < xs[3]);
        assert_eq!(axis.x(T0 - 5), xs[0]);
        assert_eq!(axis.x(T0 + 2 * hour), xs[4]);
        // Nanoseconds apart: one place.
        assert_eq!(axis.x(T0 + 1_000_017), axis.x(T0 + 1_000_000));
        // A single instant still gets a readable axis.
        let one = Axis::new(vec![T0]);
        assert!((one.x(T0) - (PLOT_X0 + PLOT_X1) / 2.0).abs() < 1.0);
        let none = Axis::new(vec![]);
        assert!(none.x(5).is_finite());
    }

    #[test]
    fn an_empty_timeline_still_renders() {
        let mut t = leak_timeline();
        t.steps.clear();
        t.lifelines.clear();
        let html = render(&t);
        assert!(html.contains("<svg id=\"timeline\""));
    }

    #[test]
    fn long_labels_keep_both_ends() {
        let s = shorten(
            "/var/lib/docker/overlay2/0123456789abcdef0123456789abcdef/merged",
            30,
        );
        assert_eq!(s.chars().count(), 30);
        assert!(s.starts_with("/var/lib/do") && s.ends_with("/merged"));
    }
}
