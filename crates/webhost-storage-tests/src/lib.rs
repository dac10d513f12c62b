//! The storage conformance suite: the same stories, run against every
//! backend. Each story is an `async fn` taking a store behind the trait
//! (`&dyn ControlStore` or `&dyn CellStore`), so it states what the trait
//! promises and nothing about SQL. [`conformance_tests!`] turns the list of
//! stories into one `#[tokio::test]` per story for a backend;
//! `tests/sqlite.rs` and `tests/postgres.rs` are one macro call each. The
//! job stories run twice: on the control store and on the cell store (each
//! database holds its own queue).
//!
//! [`backends`] opens fresh, empty databases: a temporary directory per test
//! for SQLite, a new database per test on the server named by
//! `WEBHOST_TEST_DATABASE_URL` for PostgreSQL. Its helpers are public so that
//! integration tests elsewhere in the workspace can reuse them.

pub mod backends;
pub mod cell;
pub mod control;
mod fixtures;
pub mod fleet;
pub mod jobs;
pub mod positions;
pub mod transfer;
pub mod webhooks;

/// Expands to one `#[tokio::test]` per conformance story, run against the
/// backend named by the argument: a module of [`backends`] (`sqlite` or
/// `postgres`) that provides `control()`, `cell()`, `jobs()` and
/// `cell_jobs()`.
///
/// ```text
/// // tests/sqlite.rs
/// webhost_storage_tests::conformance_tests!(sqlite);
/// ```
///
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as
/// a dependency, as for any `#[tokio::test]`.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident) => {
        $crate::__conformance_tests_for! {
            backend: $backend,
            control: [
                catalog_is_seeded_on_open,
                save_catalog_makes_the_newest_version_current,
                cells_round_trip_and_count_their_tenants,
                duplicate_cell_name_is_a_conflict,
                create_tenant_stores_tenant_owner_key_and_route,
                duplicate_email_stores_nothing_of_the_second_tenant,
                set_tenant_status_changes_tenant_and_route,
                user_by_email_returns_the_password_hash,
                api_key_lifecycle,
                api_key_of_another_tenant_cannot_be_revoked,
                delete_tenant_cascades,
                device_registry_claims_and_releases,
                unknown_ids_are_not_found,
                concurrent_signups_with_one_email_admit_one,
                concurrent_claims_of_one_device_admit_one,
                cells_record_provisioning_and_updates_merge,
                tenants_list_by_cell_and_page_with_filters,
                usage_reports_replace_and_show_in_placements,
                stripe_events_are_stored_once_with_their_job,
                billing_state_follows_payments_and_shows_in_placements,
                routes_freeze_and_unfreeze,
                switch_route_is_a_compare_and_set,
                moves_round_trip_with_one_unfinished_per_tenant,
                concurrent_moves_of_one_tenant_admit_one,
            ],
            cell: [
                put_tenant_creates_then_updates_limits,
                vehicle_round_trips_with_all_fields,
                vehicle_limit_is_enforced,
                duplicate_device_id_is_a_conflict_and_stores_nothing,
                tenants_are_isolated,
                vehicles_paginate_in_creation_order,
                update_vehicle_patch_semantics,
                update_to_a_taken_device_id_is_a_conflict,
                delete_vehicle_returns_it_then_not_found,
                delete_tenant_removes_its_vehicles,
                stats_count_tenants_and_vehicles,
                unknown_ids_are_not_found,
            ],
            positions: [
                positions_are_stored_once_and_read_back_in_order,
                latest_position_is_the_newest_valid_one,
                history_paginates_and_honours_the_range,
                positions_are_tenant_scoped,
                buckets_average_each_interval,
                deleting_removes_history,
                large_batches_over_many_days_are_stored,
                retention_removes_exactly_each_tenants_expired_history,
                usage_counts_the_window_and_shares_storage_by_rows,
            ],
            fleet: [
                geofences_round_trip_both_shapes,
                geofences_are_tenant_scoped,
                geofence_limit_is_enforced,
                events_filter_and_paginate,
                positions_events_and_states_commit_together,
                tracking_states_round_trip_and_silent_vehicles_are_found,
                deleting_vehicles_and_tenants_removes_events_and_states,
                vehicles_with_ids_are_tenant_scoped,
            ],
            webhooks: [
                webhooks_round_trip_and_patch,
                webhooks_are_tenant_scoped,
                webhook_limit_is_enforced,
                attempts_are_logged_and_failures_disable,
                delivery_jobs_commit_with_their_events,
                old_delivery_attempts_are_purged,
            ],
            transfer: [
                copy_is_row_for_row_and_digests_agree,
                history_cutoff_carries_only_recent_history,
                exports_are_tenant_scoped,
                changes_since_a_watermark_bring_a_copy_up_to_date,
                change_pages_return_every_change_once,
                read_only_marks_and_removals_of_missing_keys,
            ],
            shared_cell: [
                concurrent_creates_never_exceed_the_limit,
                concurrent_creates_with_one_device_id_admit_one,
            ],
            jobs: [
                enqueued_job_round_trips,
                unique_key_dedupes_while_unfinished,
                claim_respects_run_at_limit_queue_and_order,
                concurrent_claims_never_share_a_job,
                fail_with_retry_at_requeues_on_the_stored_schedule,
                fail_without_retry_is_final_and_listed_by_filter,
                release_does_not_count_an_attempt,
                recover_expired_requeues_only_lapsed_leases,
                heartbeat_and_progress_apply_to_running_jobs,
                cancel_and_retry_transitions,
                jobs_page_newest_first_and_filter,
                schedule_due_fires_once_per_slot,
                a_superseded_run_records_nothing,
                purge_removes_only_finished_jobs_past_their_time,
            ],
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_for {
    (
        backend: $backend:ident,
        control: [$($control:ident),* $(,)?],
        cell: [$($cell:ident),* $(,)?],
        positions: [$($positions:ident),* $(,)?],
        fleet: [$($fleet:ident),* $(,)?],
        webhooks: [$($webhooks:ident),* $(,)?],
        transfer: [$($transfer:ident),* $(,)?],
        shared_cell: [$($shared:ident),* $(,)?],
        jobs: [$($jobs:ident),* $(,)?] $(,)?
    ) => {
        mod jobs {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $jobs() {
                    let Some(fixture) = $crate::backends::$backend::jobs().await else {
                        return;
                    };
                    $crate::jobs::$jobs(fixture.store()).await;
                }
            )*
        }

        mod cell_jobs {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $jobs() {
                    let Some(fixture) = $crate::backends::$backend::cell_jobs().await else {
                        return;
                    };
                    $crate::jobs::$jobs(fixture.store()).await;
                }
            )*
        }

        mod webhooks {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $webhooks() {
                    let Some(fixture) = $crate::backends::$backend::cell().await else {
                        return;
                    };
                    $crate::webhooks::$webhooks(fixture.store()).await;
                }
            )*
        }

        mod transfer {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $transfer() {
                    // Two fresh databases: the source and the target.
                    let (Some(source), Some(target)) = (
                        $crate::backends::$backend::cell().await,
                        $crate::backends::$backend::cell().await,
                    ) else {
                        return;
                    };
                    $crate::transfer::$transfer(source.store(), target.store()).await;
                }
            )*
        }

        mod control {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $control() {
                    let Some(fixture) = $crate::backends::$backend::control().await else {
                        return;
                    };
                    $crate::control::$control(fixture.store()).await;
                }
            )*
        }

        mod positions {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $positions() {
                    let Some(fixture) = $crate::backends::$backend::cell().await else {
                        return;
                    };
                    $crate::positions::$positions(fixture.store()).await;
                }
            )*
        }

        mod fleet {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $fleet() {
                    let Some(fixture) = $crate::backends::$backend::cell().await else {
                        return;
                    };
                    $crate::fleet::$fleet(fixture.store()).await;
                }
            )*
        }

        mod cell {
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $cell() {
                    let Some(fixture) = $crate::backends::$backend::cell().await else {
                        return;
                    };
                    $crate::cell::$cell(fixture.store()).await;
                }
            )*
            $(
                #[::tokio::test(flavor = "multi_thread")]
                async fn $shared() {
                    let Some(fixture) = $crate::backends::$backend::cell().await else {
                        return;
                    };
                    $crate::cell::$shared(fixture.shared()).await;
                }
            )*
        }
    };
}
