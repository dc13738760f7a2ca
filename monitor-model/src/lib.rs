//! The leak model (work in progress: input types first).
pub mod input;
pub mod kernel;
pub mod path;
pub use input::*;
pub use kernel::KernelFacts;
pub use path::PathBytes;
