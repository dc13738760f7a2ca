//! Docker adapter (being written).
