//! Findings and notices on stdout: text blocks for people, JSON lines for
//! programs. Writes are synchronous (stdout is the daemon's primary output),
//! and a failed write (a closed pipe) is logged once, not fatal.

use std::io::Write;

use monitor_model::Finding;
use serde_json::Value;
use tracing::warn;

use super::Sink;
use crate::output::Printer;

pub struct StdoutSink<W: Write + Send> {
    printer: Printer<W>,
    broken: bool,
}

impl<W: Write + Send> StdoutSink<W> {
    pub fn new(out: W, json: bool) -> Self {
        StdoutSink {
            printer: Printer::new(out, json),
            broken: false,
        }
    }

    fn check(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            if !self.broken {
                warn!(error = %e, "cannot write to stdout; findings still go to the log and other sinks");
                self.broken = true;
            }
        }
    }
}

impl<W: Write + Send> Sink for StdoutSink<W> {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn finding(&mut self, f: &Finding) {
        let r = self.printer.finding(f);
        self.check(r);
    }

    fn notice(&mut self, kind: &str, message: &str, fields: &Value) {
        let r = self.printer.notice(kind, message, fields.clone());
        self.check(r);
    }
}
