//! The timeline document: what `mountleak timeline --json` prints and
//! `--import` reads back, and what the text and HTML renderings are made
//! from. Stable (README "Timeline JSON"): fields are only added; a reader
//! accepts any `mountleak.timeline/1…` document and ignores fields it does
//! not know.
//!
//! May import: serde, serde_json. Plain data, no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `schema` field of every timeline document of this major version.
pub const SCHEMA: &str = "mountleak.timeline/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub schema: String,
    /// When this document was made (RFC3339).
    pub generated_at: String,
    /// `mountleak 0.1.0`.
    pub generator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub target: TargetInfo,
    /// The window asked for (RFC3339), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `leaking`, `at_risk`, `removal_failed`, `resolved` or `no_leak_seen`:
    /// how things stood at the last step.
    pub status: String,
    /// One line: the conclusion.
    pub summary: String,
    /// The story, oldest first.
    pub steps: Vec<Step>,
    /// What the picture draws: one line per container, mount, holding
    /// namespace and holder process.
    pub lifelines: Vec<Lifeline>,
    /// Caveats: gaps in the history, cut-off results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What was asked for and what it matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// As typed.
    pub query: String,
    /// `container`, `pod`, `path`, `mnt_ns` or `pid`.
    pub kind: String,
    /// What it resolved to: container ids, the path, the namespace, the pid.
    #[serde(default)]
    pub matched: Vec<String>,
}

/// One step of the story.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// RFC3339 UTC with milliseconds.
    pub time: String,
    /// Unix time, ns.
    pub time_ns: i64,
    /// `CLOCK_BOOTTIME` ns of the boot it happened in.
    pub ktime_ns: i64,
    /// Which daemon run recorded it (increases with each start).
    pub run: i64,
    /// What happened (README "Timeline JSON" lists the kinds).
    pub kind: String,
    /// The step in plain language.
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Finding id (`ML-3`) for finding steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// The stored event(s) behind the step, as recorded.
    #[serde(default)]
    pub events: Vec<Value>,
}

/// One horizontal line of the picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lifeline {
    /// `container:ID`, `mount:PATH`, `mnt_ns:N`, `pid:P`.
    pub id: String,
    /// `container`, `mount`, `namespace`, `process`.
    pub kind: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `None`: it existed before the first record.
    #[serde(default)]
    pub start_ns: Option<i64>,
    /// `None`: still there at the last record.
    #[serde(default)]
    pub end_ns: Option<i64>,
    #[serde(default)]
    pub spans: Vec<Span>,
    #[serde(default)]
    pub markers: Vec<Marker>,
}

/// A stretch of a lifeline in one state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// `running`, `stopped`, `mounted`, `held`, `leak`, `alive`.
    pub kind: String,
    /// `None`: since before the first record.
    #[serde(default)]
    pub start_ns: Option<i64>,
    /// `None`: still so at the last record.
    #[serde(default)]
    pub end_ns: Option<i64>,
    pub label: String,
}

/// A moment on a lifeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// A step kind (`umount`, `ns_created`, `process_exit`, …) or a finding
    /// kind (`risk`, `leak`, `failed_removal`, `removal_warning`, `resolved`).
    pub kind: String,
    pub time_ns: i64,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("not a mountleak timeline (no \"schema\" field); save one with `mountleak timeline TARGET --json > FILE`")]
    NoSchema,
    #[error("schema {found:?} is not one this mountleak reads ({SCHEMA})")]
    Schema { found: String },
    #[error("a mountleak timeline, but malformed: {0}")]
    Malformed(serde_json::Error),
}

impl Timeline {
    /// Reads a document saved with `--json`: any `mountleak.timeline/1`
    /// (minor additions are ignored).
    pub fn import(text: &str) -> Result<Timeline, ImportError> {
        let v: Value = serde_json::from_str(text).map_err(ImportError::NotJson)?;
        let schema = v
            .get("schema")
            .and_then(Value::as_str)
            .ok_or(ImportError::NoSchema)?;
        let major_ok = schema == SCHEMA
            || schema
                .strip_prefix(SCHEMA)
                .is_some_and(|rest| rest.starts_with('.'));
        if !major_ok {
            return Err(ImportError::Schema {
                found: schema.to_string(),
            });
        }
        serde_json::from_value(v).map_err(ImportError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Timeline {
        Timeline {
            schema: SCHEMA.into(),
            generated_at: "2026-11-27T13:52:33.000Z".into(),
            generator: "mountleak 0.1.0".into(),
            host: None,
            target: TargetInfo {
                query: "web".into(),
                kind: "container".into(),
                matched: vec!["abc".into()],
            },
            since: None,
            until: None,
            status: "resolved".into(),
            summary: "s".into(),
            steps: vec![],
            lifelines: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn a_document_round_trips() {
        let t = minimal();
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(Timeline::import(&text).unwrap(), t);
    }

    #[test]
    fn newer_minor_versions_and_unknown_fields_are_read() {
        let mut v = serde_json::to_value(minimal()).unwrap();
        v["schema"] = "mountleak.timeline/1.3".into();
        v["something_new"] = 5.into();
        assert!(Timeline::import(&v.to_string()).is_ok());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = Timeline::import("{nope").unwrap_err().to_string();
        assert!(e.starts_with("not JSON"), "{e}");
        let e = Timeline::import("{\"a\": 1}").unwrap_err().to_string();
        assert!(e.contains("not a mountleak timeline"), "{e}");
        let e = Timeline::import("{\"schema\": \"mountleak.timeline/2\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one this mountleak reads"), "{e}");
        let e = Timeline::import("{\"schema\": \"mountleak.timeline/10\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one this mountleak reads"), "{e}");
        let e = Timeline::import("{\"schema\": \"mountleak.timeline/1\", \"steps\": 3}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed"), "{e}");
    }
}
