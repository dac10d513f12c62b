//! The Hetzner Cloud provider against a stateful fake of the API (servers,
//! actions, firewalls, label selectors, server types with prices), with
//! faults injected: a 429 with `Retry-After`, a 503, an answer lost after
//! the server was made, a permanent refusal. Whatever happens, at most one
//! server per cell. And what a cell costs, from Hetzner's price list.

mod fake;

use std::time::Duration;

use axum::http::Method;
use fake::{spec, start, until_ready, Fault};
use webhost_provider::{Progress, Provider, Throttled};

#[tokio::test]
async fn a_cell_is_created_polled_until_running_and_destroyed() {
    let (fake, provider) = start(vec![]).await;
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    let first = provider.poll(&spec, &resource).await.expect("poll");
    assert!(matches!(first, Progress::Pending { .. }), "{first:?}");
    let url = until_ready(&provider, &spec).await;
    assert_eq!(url, "https://hetzner-fsn1-2.cells.example.com");

    let created = fake
        .body_of(Method::POST, "/servers")
        .expect("a create request");
    assert_eq!(created["labels"]["webhost-cell"], spec.id.to_string());
    assert_eq!(created["location"], "fsn1");
    assert_eq!(created["server_type"], "cx42", "the template's product");
    let user_data = created["user_data"].as_str().expect("user data");
    assert!(user_data.contains(&format!("WEBHOST_CELL_ID={}", spec.id)));
    assert!(user_data.contains("PUBLIC_HOST=hetzner-fsn1-2.cells.example.com"));
    assert!(created["firewalls"][0]["firewall"].is_u64());

    provider.destroy(&spec, &resource).await.expect("destroy");
    assert_eq!(fake.servers(), 0);
    provider
        .destroy(&spec, &resource)
        .await
        .expect("destroying what is gone is fine");
}

#[tokio::test]
async fn creating_again_adopts_the_server_an_earlier_attempt_made() {
    let (fake, provider) = start(vec![]).await;
    let spec = spec();
    let first = provider.create(&spec).await.expect("create");
    let again = provider.create(&spec).await.expect("create after a crash");
    assert_eq!(first.external_id, again.external_id);
    assert_eq!(fake.servers(), 1);
}

#[tokio::test]
async fn a_lost_answer_still_makes_exactly_one_server() {
    // The first POST creates the server but its answer never arrives in
    // time; the retry finds the name taken and adopts the server.
    let (fake, provider) = start(vec![(Method::POST, "/servers", Fault::LoseAnswer)]).await;
    let spec = spec();
    let resource = provider.create(&spec).await.expect("create");
    assert_eq!(fake.servers(), 1);
    assert_eq!(
        resource.external_id, "2",
        "the server the lost request made"
    );
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried_to_one_server() {
    let (fake, provider) = start(vec![
        (Method::POST, "/servers", Fault::TooMany { retry_after: 1 }),
        (Method::POST, "/servers", Fault::Unavailable),
    ])
    .await;
    let spec = spec();
    until_ready(&provider, &spec).await;
    assert_eq!(fake.servers(), 1);
}

#[tokio::test]
async fn a_long_retry_after_is_handed_back_as_throttled() {
    let (fake, provider) = start(vec![(
        Method::POST,
        "/servers",
        Fault::TooMany { retry_after: 600 },
    )])
    .await;
    let err = provider.create(&spec()).await.expect_err("throttled");
    assert_eq!(Throttled::in_error(&err), Some(Duration::from_secs(600)));
    assert_eq!(fake.servers(), 0);
}

#[tokio::test]
async fn a_refusal_fails_with_hetzners_reason() {
    let (fake, provider) = start(vec![(Method::POST, "/servers", Fault::Refuse)]).await;
    let err = provider.create(&spec()).await.expect_err("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("server_type") && message.contains("422"),
        "{message}"
    );
    assert_eq!(fake.servers(), 0);
}

#[tokio::test]
async fn without_a_product_the_configured_server_type_is_created() {
    let (fake, provider) = start(vec![]).await;
    let mut spec = spec();
    spec.template.product = None;
    provider.create(&spec).await.expect("create");
    let created = fake
        .body_of(Method::POST, "/servers")
        .expect("a create request");
    assert_eq!(created["server_type"], "cx22");
}

#[tokio::test]
async fn the_monthly_cost_is_hetzners_net_price_in_the_cells_location_in_usd_cents() {
    let (fake, provider) = start(vec![]).await;
    let spec = spec();
    // cx42 in fsn1: 16.49 EUR net × 1.08 USD/EUR = 17.8092 USD.
    assert_eq!(provider.monthly_cost_cents(&spec).await.unwrap(), 1781);
    let asked: Vec<String> = fake
        .0
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(asked, ["GET /v1/server_types?name=cx42"]);

    let mut other = spec.clone();
    other.template.product = Some("ccx33".into());
    // 47.99 × 1.08 = 51.8292
    assert_eq!(provider.monthly_cost_cents(&other).await.unwrap(), 5183);
}

#[tokio::test]
async fn without_a_listed_price_the_templates_cost_is_used() {
    let (_fake, provider) = start(vec![]).await;
    let mut unlisted_type = spec();
    unlisted_type.template.product = Some("cx99".into());
    assert_eq!(
        provider.monthly_cost_cents(&unlisted_type).await.unwrap(),
        1800
    );

    // ccx33 has a price in fsn1 only.
    let mut unpriced_location = spec();
    unpriced_location.template.product = Some("ccx33".into());
    unpriced_location.region = webhost_domain::RegionCode::parse("nbg1").unwrap();
    assert_eq!(
        provider
            .monthly_cost_cents(&unpriced_location)
            .await
            .unwrap(),
        1800
    );
}

#[tokio::test]
async fn a_failed_price_lookup_is_an_error_not_a_guess() {
    let (_fake, provider) = start(vec![(Method::GET, "/server_types", Fault::Refuse)]).await;
    let err = provider
        .monthly_cost_cents(&spec())
        .await
        .expect_err("refused");
    assert!(format!("{err:#}").contains("422"), "{err:#}");
}
