//! The `webhost` binary's library half: settings and the assembled
//! application, so integration tests boot exactly what `webhost serve` runs.

pub mod admin;
pub mod app;
pub mod bench;
pub mod providers;
pub mod settings;
pub mod simulate;

pub use app::Application;
pub use settings::{Mode, Overrides, Settings};
