//! The Fly provider against the stateful fake in `fake/` (apps, secrets,
//! volumes, machines, Managed Postgres clusters), with faults injected:
//! 429 with `Retry-After`, 503, answers lost after the thing was made, a
//! capacity refusal, an unknown plan, a failed cluster, a crash between
//! steps. Whatever happens, one app, one volume, one machine and (with
//! Postgres) one cluster per cell.

mod fake;

use axum::http::Method;
use fake::{poll_until_ready, serve_fake, spec, start, start_with_postgres, until_ready, Fault};
use webhost_provider::{Progress, Provider, Refused};
use webhost_provider_fly::{FlyPostgres, CREATING_THE_DATABASE};

#[tokio::test]
async fn a_cell_is_an_app_with_secrets_a_volume_and_a_started_machine() {
    let (fake, fly) = start(vec![]).await;
    let spec = spec();
    let url = until_ready(&fly, &spec).await;
    assert_eq!(url, "https://webhost-fly-iad-2.fly.dev");
    assert_eq!(fake.counts(), (1, 1, 1));
    assert_eq!(fake.clusters(), 0);
    assert_eq!(
        fake.first(Method::GET, |p| p.starts_with("/postgres")),
        None,
        "no cluster without the config"
    );
    {
        let world = fake.0.lock().unwrap();
        let app = &world.apps["webhost-fly-iad-2"];
        assert_eq!(app.secrets["WEBHOST_CELL_ID"], spec.id.to_string());
        assert_eq!(app.secrets["DATABASE_URL"], "sqlite:/data/cell.db?mode=rwc");
        assert!(app.secrets.contains_key("SECRET_KEY_BASE"));
        let config = &app.machines[0]["config"];
        assert_eq!(config["metadata"]["webhost-cell"], spec.id.to_string());
        assert_eq!(config["checks"]["health"]["path"], "/api/health");
        assert_eq!(config["mounts"][0]["volume"], app.volumes[0]["id"]);
        assert_eq!(config["services"][0]["concurrency"]["hard_limit"], 250);
        assert_eq!(app.machines[0]["region"], "iad");
    }
    let resource = fly.create(&spec).await.expect("create again");
    assert_eq!(fake.counts(), (1, 1, 1), "a second create adopts it all");
    fly.destroy(&spec, &resource).await.expect("destroy");
    assert_eq!(fake.counts(), (0, 0, 0));
    fly.destroy(&spec, &resource)
        .await
        .expect("destroying what is gone is fine");
}

#[tokio::test]
async fn lost_answers_still_make_one_app_and_one_machine() {
    let (fake, fly) = start(vec![
        (Method::POST, "/apps", Fault::LoseAnswer),
        (Method::POST, "/machines", Fault::LoseAnswer),
    ])
    .await;
    until_ready(&fly, &spec()).await;
    assert_eq!(fake.counts(), (1, 1, 1));
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried() {
    let (fake, fly) = start(vec![
        (Method::POST, "/machines", Fault::TooMany { retry_after: 1 }),
        (Method::POST, "/volumes", Fault::Unavailable),
    ])
    .await;
    until_ready(&fly, &spec()).await;
    assert_eq!(fake.counts(), (1, 1, 1));
}

#[tokio::test]
async fn no_capacity_in_the_region_fails_with_flys_reason_and_no_machine() {
    let (fake, fly) = start(vec![(Method::POST, "/machines", Fault::NoCapacity)]).await;
    let err = fly.create(&spec()).await.expect_err("refused");
    let message = format!("{err:#}");
    assert!(message.contains("insufficient resources"), "{message}");
    assert_eq!(Refused::in_error(&err).map(|r| r.status), Some(422));
    let (_, _, machines) = fake.counts();
    assert_eq!(machines, 0);
}

#[tokio::test]
async fn a_stopped_machine_is_started_again() {
    let (fake, fly) = start(vec![]).await;
    let spec = spec();
    let resource = fly.create(&spec).await.expect("create");
    poll_until_ready(&fly, &spec, &resource).await;
    fake.0
        .lock()
        .unwrap()
        .apps
        .values_mut()
        .next()
        .unwrap()
        .machines[0]["state"] = serde_json::json!("stopped");
    match fly.poll(&spec, &resource).await.expect("poll") {
        Progress::Pending { step, .. } => assert!(step.starts_with("starting machine"), "{step}"),
        other => panic!("{other:?}"),
    }
    assert!(fake
        .first(Method::POST, |p| p.ends_with("/start"))
        .is_some());
    poll_until_ready(&fly, &spec, &resource).await;
}

#[tokio::test]
async fn a_cell_with_postgres_gets_a_postgis_cluster_and_its_direct_url_as_database_url() {
    let (fake, fly) = start_with_postgres(vec![]).await;
    let spec = spec();
    let resource = fly.create(&spec).await.expect("create");
    assert_eq!(resource.external_id, "webhost-fly-iad-2");
    let cluster_id = resource.detail["postgres"].as_str().expect("cluster id");
    assert_eq!(fake.clusters(), 1);
    assert_eq!(fake.counts(), (1, 0, 0), "the app, and nothing else yet");

    match fly.poll(&spec, &resource).await.expect("poll") {
        Progress::Pending { step, .. } => assert_eq!(step, CREATING_THE_DATABASE),
        other => panic!("the cluster is still provisioning: {other:?}"),
    }
    assert_eq!(fake.counts(), (1, 0, 0), "no machine before the database");

    let url = poll_until_ready(&fly, &spec, &resource).await;
    assert_eq!(url, "https://webhost-fly-iad-2.fly.dev");
    assert_eq!(fake.counts(), (1, 1, 1));
    assert_eq!(fake.clusters(), 1);

    let world = fake.0.lock().unwrap();
    let cluster = &world.clusters[0];
    assert_eq!(cluster.json["id"], cluster_id);
    assert_eq!(cluster.request["name"], "webhost-fly-iad-2-db");
    assert_eq!(cluster.request["org_slug"], "webhost");
    assert_eq!(cluster.request["region"], "iad");
    assert_eq!(cluster.request["plan"], "basic");
    assert_eq!(cluster.request["disk_size_gb"], 10);
    assert_eq!(cluster.request["pg_major_version"], "16");
    assert_eq!(
        cluster.request["postgis_enabled"], true,
        "PostGIS asked for"
    );
    let app = &world.apps["webhost-fly-iad-2"];
    let direct = &cluster.json["endpoints"]["primary"]["direct"];
    assert_eq!(direct["host"], format!("direct.{cluster_id}.flympg.net"));
    assert_eq!(fake::password(cluster_id), format!("pw/{cluster_id}@x:y"));
    assert_eq!(
        app.secrets["DATABASE_URL"],
        format!("postgres://fly-user:pw%2F{cluster_id}%40x%3Ay@direct.{cluster_id}.flympg.net:5432/fly-db"),
        "fly-user on the cluster's direct endpoint, password escaped; not the configured URL"
    );
    assert_eq!(app.secrets["WEBHOST_CELL_ID"], spec.id.to_string());
    drop(world);
    let secrets = fake
        .last(Method::POST, |p| p.ends_with("/secrets"))
        .expect("secrets set");
    let machine = fake
        .first(Method::POST, |p| p.ends_with("/machines"))
        .expect("machine made");
    assert!(secrets < machine, "the machine boots with DATABASE_URL set");
}

#[tokio::test]
async fn a_lost_cluster_answer_makes_one_cluster() {
    for fault in [Fault::LoseAnswer, Fault::DoneThen500] {
        let (fake, fly) =
            start_with_postgres(vec![(Method::POST, "/postgres", fault.clone())]).await;
        let spec = spec();
        let resource = fly.create(&spec).await.expect("create");
        assert_eq!(fake.clusters(), 1, "{fault:?}");
        {
            let world = fake.0.lock().unwrap();
            assert_eq!(resource.detail["postgres"], world.clusters[0].json["id"]);
            let posts = world
                .requests
                .iter()
                .filter(|(m, p, _)| *m == Method::POST && p == "/postgres")
                .count();
            assert_eq!(posts, 1, "{fault:?}: looked, found, did not ask again");
        }
        poll_until_ready(&fly, &spec, &resource).await;
        assert_eq!(fake.clusters(), 1);
        assert_eq!(fake.counts(), (1, 1, 1));
    }
}

#[tokio::test]
async fn a_taken_cluster_name_is_our_earlier_cluster_when_the_listing_has_it() {
    let (fake, fly) = start_with_postgres(vec![]).await;
    let spec = spec();
    let first = fly.create(&spec).await.expect("create");
    // The listing misses it once (as if it lagged), so the POST is sent and
    // refused with 422 name taken: the cluster is found, not refused.
    fake.0
        .lock()
        .unwrap()
        .faults
        .push_back((Method::GET, "/postgres", Fault::EmptyListing));
    let second = fly.create(&spec).await.expect("create again");
    assert_eq!(first, second);
    assert_eq!(fake.clusters(), 1);
}

#[tokio::test]
async fn a_crash_mid_flow_resumes_from_what_is_at_fly() {
    let (fake, endpoint) = serve_fake(vec![]).await;
    let spec = spec();
    // The first process asks for the cluster, polls once, and dies.
    let resource = {
        let fly = fake::fly(&endpoint, Some(fake::postgres()));
        let resource = fly.create(&spec).await.expect("create");
        fly.poll(&spec, &resource).await.expect("poll");
        resource
    };
    // The next one did not see `create`'s answer recorded: it creates
    // again and gets the same cluster.
    let fly = fake::fly(&endpoint, Some(fake::postgres()));
    assert_eq!(fly.create(&spec).await.expect("create again"), resource);
    // The machine cannot be made (503 until the retries are spent): the
    // secrets and the volume are there, the poll fails, the process dies.
    fake.0.lock().unwrap().faults.extend([
        (Method::POST, "/machines", Fault::Unavailable),
        (Method::POST, "/machines", Fault::Unavailable),
        (Method::POST, "/machines", Fault::Unavailable),
    ]);
    let mut failed = false;
    for _ in 0..10 {
        if fly.poll(&spec, &resource).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the machine's 503s reach the poll");
    assert_eq!(fake.counts(), (1, 1, 0));
    drop(fly);
    // A third process only polls, and finishes the cell.
    let fly = fake::fly(&endpoint, Some(fake::postgres()));
    poll_until_ready(&fly, &spec, &resource).await;
    assert_eq!(fake.counts(), (1, 1, 1));
    assert_eq!(fake.clusters(), 1);
}

#[tokio::test]
async fn destroy_removes_machine_volume_cluster_and_app_in_that_order() {
    let (fake, fly) = start_with_postgres(vec![]).await;
    let spec = spec();
    let resource = fly.create(&spec).await.expect("create");
    poll_until_ready(&fly, &spec, &resource).await;
    fly.destroy(&spec, &resource).await.expect("destroy");
    assert_eq!(fake.counts(), (0, 0, 0));
    assert_eq!(fake.clusters(), 0);
    let order = [
        fake.first(Method::DELETE, |p| p.contains("/machines/")),
        fake.first(Method::DELETE, |p| p.contains("/volumes/")),
        fake.first(Method::DELETE, |p| p.starts_with("/postgres/")),
        fake.first(Method::DELETE, |p| p == "/apps/webhost-fly-iad-2"),
    ];
    assert!(order.iter().all(Option::is_some), "{order:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let forced = fake.0.lock().unwrap().requests.iter().any(|(m, p, _)| {
        *m == Method::DELETE && p.contains("/machines/") && p.ends_with("?force=true")
    });
    assert!(
        forced,
        "a running machine is deleted without stopping it first"
    );
    fly.destroy(&spec, &resource)
        .await
        .expect("destroying what is gone is fine");
}

#[tokio::test]
async fn an_unknown_plan_is_refused_for_good_and_makes_no_cluster() {
    let (fake, endpoint) = serve_fake(vec![]).await;
    let fly = fake::fly(
        &endpoint,
        Some(FlyPostgres {
            plan: "galactic".into(),
            ..fake::postgres()
        }),
    );
    let err = fly.create(&spec()).await.expect_err("refused");
    let refused = Refused::in_error(&err).expect("a Refused error");
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("unknown plan"), "{refused}");
    assert_eq!(fake.clusters(), 0);
}

#[tokio::test]
async fn a_failed_cluster_fails_the_cell_with_flys_words() {
    let (fake, fly) = start_with_postgres(vec![(
        Method::POST,
        "/postgres",
        Fault::ClusterFails("volume provisioning failed in iad"),
    )])
    .await;
    let spec = spec();
    let resource = fly.create(&spec).await.expect("create");
    match fly.poll(&spec, &resource).await.expect("poll") {
        Progress::Failed { reason } => {
            assert!(
                reason.contains("volume provisioning failed in iad"),
                "{reason}"
            );
            assert!(reason.contains("webhost-fly-iad-2-db"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.counts(), (1, 0, 0), "no machine without a database");
}
