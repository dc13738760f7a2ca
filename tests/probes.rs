//! Probe tests (filled in next).
