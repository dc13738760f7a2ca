//! The timeline as text for a person: a header, one line per step, the
//! conclusion and the caveats. Pure.

use super::schema::Timeline;

pub fn render(t: &Timeline) -> String {
    let mut out = String::new();
    let what = match t.target.kind.as_str() {
        "mnt_ns" => "mount namespace",
        "path" => "mount path",
        other => other,
    };
    let matched = if t.target.matched.is_empty() || t.target.matched == [t.target.query.clone()] {
        String::new()
    } else {
        format!(" = {}", t.target.matched.join(", "))
    };
    out.push_str(&format!(
        "mountleak timeline of {what} {}{matched}: {} step(s)",
        t.target.query,
        t.steps.len()
    ));
    if let (Some(first), Some(last)) = (t.steps.first(), t.steps.last()) {
        out.push_str(&format!(", {} … {}", first.time, last.time));
    }
    if t.since.is_some() || t.until.is_some() {
        out.push_str(&format!(
            " (window {} … {})",
            t.since.as_deref().unwrap_or("start"),
            t.until.as_deref().unwrap_or("end")
        ));
    }
    out.push('\n');
    if let Some(h) = &t.host {
        out.push_str(&format!(
            "host {h}, made {} by {}\n",
            t.generated_at, t.generator
        ));
    }
    out.push('\n');
    let mut run = None;
    for s in &t.steps {
        if run.is_some_and(|r| r != s.run) {
            out.push_str("                          — mountleak restarted —\n");
        }
        run = Some(s.run);
        out.push_str(&format!("{}  {}\n", s.time, s.text));
    }
    out.push_str(&format!(
        "\n{}: {}\n",
        t.status.replace('_', " ").to_uppercase(),
        t.summary
    ));
    for n in &t.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::story::tests::leak_timeline;
    use super::*;

    #[test]
    fn one_line_per_step_with_a_conclusion() {
        let t = leak_timeline();
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("mountleak timeline of container web = c0ffee: 14 step(s), "),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("2026-")).count(),
            14,
            "{text}"
        );
        assert!(
            text.contains("created mount namespace 4026532177 with unshare"),
            "{text}"
        );
        assert!(
            text.ends_with("RESOLVED: resolved at 2026-11-18T11:07:00.000Z: the holder exited\n"),
            "{text}"
        );
    }

    #[test]
    fn a_restart_is_visible_between_steps() {
        let mut t = leak_timeline();
        for s in t.steps.iter_mut().skip(5) {
            s.run = 2;
        }
        let text = render(&t);
        assert_eq!(text.matches("mountleak restarted").count(), 1, "{text}");
    }
}
