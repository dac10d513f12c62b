//! End-to-end tests: the real application (control plane, local cells, edge)
//! booted on port 0 with fresh databases, driven over HTTP. Every story runs
//! on SQLite, and on PostgreSQL when `WEBHOST_TEST_DATABASE_URL` is set.

mod helpers;

mod bad_input;
mod billing;
mod devices;
mod events;
mod geofences;
mod graphql;
mod identity;
mod isolation;
mod live;
mod moves;
mod operations;
mod operator;
mod plans;
mod positions;
mod retention;
mod vehicles;
mod webhooks;
