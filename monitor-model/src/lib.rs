//! The leak model (work in progress: input types first).
pub mod input;
pub mod path;
pub use input::*;
pub use path::PathBytes;
