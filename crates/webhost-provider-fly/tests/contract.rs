//! Every request the Fly provider sends is checked against the published
//! Machines API description (`specs/providers/fly-machines.openapi.yaml`),
//! served by Prism: a `Tee` hands each request to the stateful fake (which
//! drives the flow) and to Prism (which judges it). The whole life of a
//! cell — create, poll until ready, a stopped machine started again, a
//! second create adopting it all, destroy twice — runs without and with
//! Managed Postgres.
//!
//! No request may break the description. The description predates secrets
//! and Managed Postgres, so those requests are undescribed; they are listed
//! here one by one, so that any other undescribed call fails the test (and
//! gets looked at) instead of passing unchecked.
//!
//! Skipped with a note when Prism is not installed (`npm ci` at the repo
//! root), except under `CI=true`.

mod fake;

use std::collections::BTreeSet;
use std::time::Duration;

use fake::{poll_until_ready, serve_fake, spec};
use serde_json::json;
use webhost_provider::{Progress, Provider};
use webhost_provider_fly::Fly;
use webhost_provider_http::testing::{provider_spec, Prism, Tee};

/// What the client sends that the description does not have (the paths as
/// Prism sees them, ids replaced by the description's placeholders).
const UNDESCRIBED_WITHOUT_POSTGRES: &[&str] = &["POST /apps/{app_name}/secrets"];
const UNDESCRIBED_WITH_POSTGRES: &[&str] = &[
    "POST /apps/{app_name}/secrets",
    "GET /postgres",
    "POST /postgres",
    "GET /postgres/{id}",
    "GET /postgres/{id}/users/fly-user/credentials",
    "DELETE /postgres/{id}",
];

/// Query strings the client sends. Prism lets a parameter the description
/// does not declare pass, so they are listed here: `force` on a machine's
/// DELETE is in Fly's current documentation, not in the stored description.
const QUERIES: &[&str] = &[
    "DELETE /v1/apps/{app_name}/machines/{machine_id}?force=true",
    "GET /v1/postgres?org_slug=webhost",
];

/// The described operations each flow must have gone through, so a flow
/// that silently skipped its steps cannot pass.
const DESCRIBED: &[&str] = &[
    "GET /v1/apps/{app_name}",
    "POST /v1/apps",
    "GET /v1/apps/{app_name}/volumes",
    "POST /v1/apps/{app_name}/volumes",
    "GET /v1/apps/{app_name}/machines",
    "POST /v1/apps/{app_name}/machines",
    "POST /v1/apps/{app_name}/machines/{machine_id}/start",
    "DELETE /v1/apps/{app_name}/machines/{machine_id}",
    "DELETE /v1/apps/{app_name}/volumes/{volume_id}",
    "DELETE /v1/apps/{app_name}",
];

async fn whole_flow_against_the_description(with_postgres: bool) {
    let Some(prism) = Prism::start(&provider_spec("fly-machines.openapi.yaml")).await else {
        return;
    };
    let (fake, upstream) = serve_fake(vec![]).await;
    let tee = Tee::start(&upstream, &prism, "/v1").await;
    let mut config = fake::config(tee.url(), with_postgres.then(fake::postgres));
    // Each request waits for Prism too, on a possibly busy machine: no
    // timeout (and so no retry) should come from that.
    config.retry.timeout = Duration::from_secs(60);
    let fly = Fly::new(config).unwrap();
    let spec = spec();

    let resource = fly.create(&spec).await.expect("create");
    poll_until_ready(&fly, &spec, &resource).await;
    // A stopped machine is started again.
    fake.0
        .lock()
        .unwrap()
        .apps
        .values_mut()
        .next()
        .unwrap()
        .machines[0]["state"] = json!("stopped");
    assert!(matches!(
        fly.poll(&spec, &resource).await.expect("poll"),
        Progress::Pending { .. }
    ));
    poll_until_ready(&fly, &spec, &resource).await;
    assert_eq!(fly.create(&spec).await.expect("create again"), resource);
    fly.destroy(&spec, &resource).await.expect("destroy");
    fly.destroy(&spec, &resource).await.expect("destroy again");
    assert_eq!(fake.counts(), (0, 0, 0));
    assert_eq!(fake.clusters(), 0);

    let violations = tee.violations();
    assert!(
        violations.is_empty(),
        "requests the description does not allow:\n{violations:#?}\nPrism's log:\n{}",
        prism.log()
    );

    // Concrete names and ids back to placeholders.
    let app = resource.external_id.as_str();
    let (machines, volumes) = {
        let world = fake.0.lock().unwrap();
        let machine_ids: Vec<String> = world
            .requests
            .iter()
            .filter_map(|(m, p, _)| {
                let p = p.split('?').next().unwrap_or_default();
                let rest = p.strip_prefix(&format!("/apps/{app}/machines/"))?;
                (*m == "DELETE").then(|| rest.to_string())
            })
            .collect();
        let volume_ids: Vec<String> = world
            .requests
            .iter()
            .filter_map(|(m, p, _)| {
                let rest = p.strip_prefix(&format!("/apps/{app}/volumes/"))?;
                (*m == "DELETE").then(|| rest.to_string())
            })
            .collect();
        (machine_ids, volume_ids)
    };
    let cluster = resource.detail["postgres"].as_str().unwrap_or("\u{0}");
    let placeholders = |line: &str| -> String {
        let mut out = Vec::new();
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        let path = path.split('?').next().unwrap_or_default();
        let mut previous = "";
        for segment in path.split('/') {
            let replaced = if segment == app {
                "{app_name}"
            } else if segment == cluster {
                "{id}"
            } else if previous == "machines" && machines.iter().any(|m| m == segment) {
                "{machine_id}"
            } else if previous == "volumes" && volumes.iter().any(|v| v == segment) {
                "{volume_id}"
            } else {
                segment
            };
            out.push(replaced);
            previous = segment;
        }
        format!("{method} {}", out.join("/"))
    };

    let undescribed: BTreeSet<String> = tee.undescribed().iter().map(|u| placeholders(u)).collect();
    let expected: BTreeSet<String> = if with_postgres {
        UNDESCRIBED_WITH_POSTGRES
    } else {
        UNDESCRIBED_WITHOUT_POSTGRES
    }
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        undescribed, expected,
        "the requests outside the description changed: check each new one against Fly's \
         documentation and list it here"
    );

    let queries: BTreeSet<String> = tee
        .seen()
        .iter()
        .filter_map(|s| {
            let (_, query) = s.split_once('?')?;
            Some(format!("{}?{query}", placeholders(s)))
        })
        .collect();
    for query in &queries {
        assert!(
            QUERIES.contains(&query.as_str()),
            "a query string not listed (nor checked by Prism): {query}"
        );
    }
    let seen: BTreeSet<String> = tee.seen().iter().map(|s| placeholders(s)).collect();
    for operation in DESCRIBED {
        assert!(
            seen.contains(*operation),
            "the flow never sent {operation}; it sent {seen:#?}"
        );
    }
}

#[tokio::test]
async fn a_cell_on_the_volume_sends_only_what_the_description_allows() {
    whole_flow_against_the_description(false).await;
}

#[tokio::test]
async fn a_cell_with_managed_postgres_sends_only_what_the_description_allows() {
    whole_flow_against_the_description(true).await;
}
