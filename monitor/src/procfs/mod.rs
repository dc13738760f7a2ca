//! Reading state from /proc (filled in next).
