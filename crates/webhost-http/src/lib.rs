//! HTTP plumbing shared by the edge, the control plane and the cells: the
//! error body of SPEC §4, the JSON extractor, the middleware every response
//! passes through, user tokens, the internal credential that cells and the
//! control plane require, and the client that signs internal calls.

pub mod auth;
pub mod client;
mod error;
pub mod health;
mod json;
mod layers;
pub mod serve;

pub use error::ApiError;
pub use json::{double_option, ApiJson, ApiQuery};
pub use layers::{common_layers, fallback, method_not_allowed, MAX_BODY_BYTES};
