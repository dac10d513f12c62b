//! A tenant copied across engines: SQLite → PostgreSQL and back, with the
//! same story as the same-engine copy — row for row, equal digests,
//! importing again changes nothing. Runs when `WEBHOST_TEST_DATABASE_URL`
//! is set (as the PostgreSQL conformance suite does); the digest is the
//! same function of the rows on both engines, or this fails.

use webhost_storage_tests::backends::{postgres, sqlite};
use webhost_storage_tests::transfer::{
    copy_is_row_for_row_and_digests_agree, history_cutoff_carries_only_recent_history,
};

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_postgres() {
    let Some(target) = postgres::cell().await else {
        return;
    };
    let source = sqlite::cell().await.expect("a SQLite store");
    copy_is_row_for_row_and_digests_agree(source.store(), target.store()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_sqlite() {
    let Some(source) = postgres::cell().await else {
        return;
    };
    let target = sqlite::cell().await.expect("a SQLite store");
    copy_is_row_for_row_and_digests_agree(source.store(), target.store()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_postgres_with_a_history_cutoff() {
    let Some(target) = postgres::cell().await else {
        return;
    };
    let source = sqlite::cell().await.expect("a SQLite store");
    history_cutoff_carries_only_recent_history(source.store(), target.store()).await;
}
