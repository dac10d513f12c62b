//! Every request the Hetzner Cloud provider sends in a whole cell's life —
//! find or make the firewall, create the server, poll its action and the
//! server until it runs, adopt it on a second create, price it, destroy it
//! (twice) — validates against Hetzner's published API description
//! (`specs/providers/hetzner-cloud.openapi.json`), checked by Prism through
//! a tee in front of the stateful fake. Skipped with a note when Prism is
//! not installed (`npm ci` at the repo root), failed under `CI=true`.

mod fake;

use std::time::Duration;

use fake::{spec, until_ready, Fake};
use webhost_provider::Provider;
use webhost_provider_hetzner::HetznerCloud;
use webhost_provider_http::testing::{provider_spec, Prism, Tee};

#[tokio::test]
async fn every_request_of_a_cells_life_is_one_the_description_allows() {
    let Some(prism) = Prism::start(&provider_spec("hetzner-cloud.openapi.json")).await else {
        return;
    };
    let fake = Fake::default();
    let upstream = fake.serve().await;
    // The client sends `/v1/servers` as to the real API; the description's
    // paths start after its server's `/v1`.
    let tee = Tee::start(&upstream, &prism, "/v1").await;
    let mut config = fake::config(format!("{}/v1", tee.url()));
    // Each request waits for Prism as well as the fake.
    config.retry.timeout = Duration::from_secs(30);
    let provider = HetznerCloud::new(config).unwrap();
    let spec = spec();

    until_ready(&provider, &spec).await;
    let resource = provider.create(&spec).await.expect("create adopts");
    let cost = provider.monthly_cost_cents(&spec).await.expect("price");
    assert_eq!(cost, 1781);
    provider.destroy(&spec, &resource).await.expect("destroy");
    provider
        .destroy(&spec, &resource)
        .await
        .expect("destroy what is gone");
    assert_eq!(fake.servers(), 0);

    let seen = tee.seen();
    for operation in [
        "GET /v1/servers?label_selector=",
        "GET /v1/firewalls?name=",
        "POST /v1/firewalls",
        "POST /v1/servers",
        "GET /v1/actions/",
        "GET /v1/servers/",
        "GET /v1/server_types?name=",
        "DELETE /v1/servers/",
    ] {
        assert!(
            seen.iter().any(|s| s.starts_with(operation)),
            "{operation} was not checked; seen: {seen:#?}"
        );
    }
    assert_eq!(
        tee.violations(),
        Vec::<String>::new(),
        "requests the description does not allow"
    );
    assert_eq!(
        tee.undescribed(),
        Vec::<String>::new(),
        "requests the description does not describe"
    );
}
