//! The deploy files say what the application expects: `deploy/fly.toml`
//! (parsed here; the other files are validated by their own tools in
//! `.ci/run`) and the variables the Compose stack hands the cell.

use std::path::PathBuf;

fn deploy(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn known_variable(name: &str) -> bool {
    webhost::settings::reads_variable(name)
}

#[test]
fn only_variables_webhost_reads_count_as_known() {
    for name in [
        "DATABASE_URL",
        "WEBHOST_CELL_ID",
        "WEBHOST_MODE",
        "RUST_LOG",
    ] {
        assert!(known_variable(name), "{name}");
    }
    for name in ["WEBHOST_CELLID", "DATABASE", "PG_URL", "WEBHOST_"] {
        assert!(!known_variable(name), "{name}");
    }
}

#[test]
fn fly_toml_runs_a_health_checked_cell_with_rolling_deploys() {
    let fly: toml::Table = deploy("fly.toml").parse().expect("fly.toml is TOML");
    let get = |path: &str| -> &toml::Value {
        path.split('.')
            .try_fold(None::<&toml::Value>, |at, key| {
                let table = match at {
                    None => &fly,
                    Some(v) => v.as_table()?,
                };
                table.get(key).map(Some)
            })
            .flatten()
            .unwrap_or_else(|| panic!("fly.toml lacks {path}"))
    };
    assert_eq!(get("deploy.strategy").as_str(), Some("rolling"));
    assert_eq!(get("processes.app").as_str(), Some("cell"));
    let port = get("env.PORT").as_str().expect("PORT is a string");
    assert_eq!(
        get("http_service.internal_port").as_integer(),
        port.parse::<i64>().ok(),
        "the service's port is the one the cell listens on"
    );
    assert_eq!(get("env.WEBHOST_MODE").as_str(), Some("production"));
    let concurrency = get("http_service.concurrency");
    let soft = concurrency["soft_limit"].as_integer().expect("soft_limit");
    let hard = concurrency["hard_limit"].as_integer().expect("hard_limit");
    assert!(
        0 < soft && soft < hard,
        "connection limits: {soft} < {hard}"
    );
    let checks = get("http_service.checks").as_array().expect("checks");
    assert!(
        checks
            .iter()
            .any(|c| c["path"].as_str() == Some("/api/health")
                && c["method"].as_str() == Some("GET")),
        "a health check on GET /api/health: {checks:?}"
    );
    for name in get("env").as_table().expect("env").keys() {
        assert!(
            known_variable(name),
            "fly.toml sets {name}, which WebHost does not read"
        );
    }
}

#[test]
fn the_compose_stack_gives_the_cell_only_variables_it_reads() {
    let compose = deploy("hetzner/compose.yaml");
    let webhost = compose
        .split("\n  webhost:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  caddy:\n").next())
        .expect("a webhost service");
    let environment = webhost
        .split("environment:\n")
        .nth(1)
        .expect("its environment");
    let names: Vec<&str> = environment
        .lines()
        .take_while(|l| l.starts_with("      "))
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    assert!(
        names.contains(&"DATABASE_URL") && names.contains(&"WEBHOST_CELL_ID"),
        "{names:?}"
    );
    for name in names {
        assert!(
            known_variable(name),
            "compose.yaml sets {name}, which WebHost does not read"
        );
    }
    // The container health check and the proxy's both use /api/health.
    assert!(deploy("Dockerfile").contains(r#"CMD ["/usr/local/bin/webhost", "health"]"#));
    assert!(deploy("hetzner/Caddyfile").contains("health_uri /api/health"));
}
