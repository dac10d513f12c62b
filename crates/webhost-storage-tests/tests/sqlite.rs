//! The storage conformance suite on SQLite: always runs.

webhost_storage_tests::conformance_tests!(sqlite);
