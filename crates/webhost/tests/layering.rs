//! The workspace's layering, read off `cargo metadata`: crates depend
//! downward only (ARCHITECTURE.md, "Invariants").

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace crate and the workspace crates it depends on (normal,
/// build and dev dependencies alike).
fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .map(|d| d["name"].as_str().expect("name").to_string())
                .filter(|name| members.contains(name))
                .collect();
            (p["name"].as_str().expect("name").to_string(), deps)
        })
        .collect()
}

fn assert_no_dependency(deps: &BTreeMap<String, BTreeSet<String>>, from: &str, on: &str) {
    let of = deps
        .get(from)
        .unwrap_or_else(|| panic!("{from} is not a workspace crate"));
    assert!(!of.contains(on), "{from} must not depend on {on}");
}

#[test]
fn cell_control_and_edge_do_not_depend_on_one_another() {
    let deps = workspace_dependencies();
    let services = ["webhost-cell", "webhost-control", "webhost-edge"];
    for from in services {
        for on in services {
            if from != on {
                assert_no_dependency(&deps, from, on);
            }
        }
        // What they share goes through the contract crate.
        assert!(
            deps[from].contains("webhost-contract"),
            "{from} speaks the internal contract"
        );
    }
}

#[test]
fn only_the_local_provider_and_the_binary_link_the_cell() {
    let deps = workspace_dependencies();
    let linking: BTreeSet<&str> = deps
        .iter()
        .filter(|(_, on)| on.contains("webhost-cell"))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        linking,
        BTreeSet::from(["webhost", "webhost-provider-local"])
    );
}

#[test]
fn pure_crates_and_ports_depend_on_nothing_above_them() {
    let deps = workspace_dependencies();
    let above = [
        "webhost",
        "webhost-cell",
        "webhost-control",
        "webhost-edge",
        "webhost-http",
        "webhost-api",
        "webhost-storage-sqlite",
        "webhost-storage-postgres",
        "webhost-provider-local",
    ];
    for pure in [
        "webhost-domain",
        "webhost-protocols",
        "webhost-geofence",
        "webhost-contract",
        "webhost-storage",
        "webhost-provider",
        "webhost-move",
    ] {
        for on in above {
            assert_no_dependency(&deps, pure, on);
        }
    }
    // Storage and providers are ports/adapters: no service above them.
    for adapter in ["webhost-storage-sqlite", "webhost-storage-postgres"] {
        for on in [
            "webhost-cell",
            "webhost-control",
            "webhost-edge",
            "webhost-http",
        ] {
            assert_no_dependency(&deps, adapter, on);
        }
    }
}
