//! The storage conformance suite on PostgreSQL: runs when
//! `WEBHOST_TEST_DATABASE_URL` is set (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`), fails when it is not set
//! and `CI=true`, and prints a note and passes otherwise.

webhost_storage_tests::conformance_tests!(postgres);
