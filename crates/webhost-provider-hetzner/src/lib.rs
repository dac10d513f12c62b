//! The `hetzner` provider: cells on Hetzner Cloud servers ([`cloud`]) and
//! dedicated servers ordered through Robot (`robot`), each booted by
//! `deploy/hetzner` (cloud-init on Cloud, the same bootstrap script over
//! SSH after a dedicated server's OS install).

pub mod cloud;
mod provider;
pub mod robot;

pub use cloud::{user_data, CloudConfig, HetznerCloud, CLOUD_INIT, DEFAULT_ENDPOINT};
pub use provider::Hetzner;
pub use robot::{
    HetznerRobot, RemoteRunner, RobotConfig, SshRunner, DEFAULT_DIST, DEFAULT_LANG,
    DEFAULT_PRODUCT, ROBOT_ENDPOINT,
};
