//! Scanner tests (filled in next).
