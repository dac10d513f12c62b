//! The `webhost` binary's library half: settings and the assembled
//! application, so integration tests boot exactly what `webhost serve` runs.

pub mod app;
pub mod settings;

pub use app::Application;
pub use settings::{Mode, Overrides, Settings};
