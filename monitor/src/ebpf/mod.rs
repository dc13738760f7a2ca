//! Probes: loading, attaching, reading the ring buffer (filled in next).
