//! containerd adapter (being written).
