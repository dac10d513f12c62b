//! The storage conformance suite on PostgreSQL: runs when
//! `WEBHOST_TEST_DATABASE_URL` is set (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`), fails when it is not set
//! and `CI=true`, and prints a note and passes otherwise.

webhost_storage_tests::conformance_tests!(postgres);

/// Transactions committing out of the order they began are caught up
/// (`export_changes` since a watermark read while one was open).
#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_commits_are_caught_up() {
    let Some(fixture) = webhost_storage_tests::backends::postgres::cell().await else {
        return;
    };
    let url = fixture.postgres_url().expect("a PostgreSQL fixture");
    webhost_storage_tests::transfer::out_of_order_commits_are_caught_up(fixture.store(), url).await;
}

/// The PostGIS column agrees with the stored shape: the polygon itself
/// (holes included), the circle as its centre with the radius beside it.
#[tokio::test(flavor = "multi_thread")]
async fn postgis_geometry_matches_the_shape() {
    use serde_json::json;
    use sqlx::Connection;
    use webhost_domain::{GeofenceId, ShortText};
    use webhost_geofence::Shape;
    use webhost_storage::{GeofencePatch, NewGeofence};

    let Some(fixture) = webhost_storage_tests::backends::postgres::cell().await else {
        return;
    };
    let store = fixture.store();
    let tenant = webhost_storage::CellTenant {
        id: webhost_domain::TenantId::new(),
        plan: webhost_domain::PlanName::parse("starter").expect("plan"),
        max_vehicles: 5,
        retention_days: 30,
    };
    store.put_tenant(tenant.clone()).await.expect("tenant");
    let polygon = Shape::from_geojson(&json!({
        "type": "Polygon",
        "coordinates": [
            [[13.0, 52.0], [14.0, 52.0], [14.0, 53.0], [13.0, 53.0], [13.0, 52.0]],
            [[13.4, 52.4], [13.6, 52.4], [13.6, 52.6], [13.4, 52.6], [13.4, 52.4]]
        ]
    }))
    .expect("polygon");
    let name = ShortText::parse("name", "Zone").expect("name");
    let zone = store
        .create_geofence(
            tenant.id,
            NewGeofence {
                id: GeofenceId::new(),
                name: name.clone(),
                shape: polygon.clone(),
            },
        )
        .await
        .expect("polygon");
    let ring = store
        .create_geofence(
            tenant.id,
            NewGeofence {
                id: GeofenceId::new(),
                name,
                shape: Shape::circle(48.137, 11.575, 1_000.0).expect("circle"),
            },
        )
        .await
        .expect("circle");

    let url = fixture.postgres_url().expect("a PostgreSQL fixture");
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let contains = "SELECT CASE WHEN kind = 'polygon' \
         THEN ST_Covers(geom, ST_SetSRID(ST_MakePoint($2, $3), 4326)) \
         ELSE ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography, \
         radius_m, false) END FROM geofences WHERE id = $1";
    for (id, lon, lat, shape) in [
        (zone.id, 13.2, 52.2, &polygon),
        (zone.id, 13.5, 52.5, &polygon),
        (zone.id, 15.0, 52.5, &polygon),
        (ring.id, 11.575, 48.137, &ring.shape),
        (ring.id, 11.575, 48.145, &ring.shape),
        (ring.id, 11.575, 48.130, &ring.shape),
    ] {
        let inside: bool = sqlx::query_scalar(contains)
            .bind(id.as_uuid())
            .bind(lon)
            .bind(lat)
            .fetch_one(&mut conn)
            .await
            .expect("query");
        assert_eq!(inside, shape.contains(lat, lon), "({lat}, {lon})");
    }
    let srid: i32 = sqlx::query_scalar("SELECT ST_SRID(geom) FROM geofences WHERE id = $1")
        .bind(zone.id.as_uuid())
        .fetch_one(&mut conn)
        .await
        .expect("srid");
    assert_eq!(srid, 4326);

    // An update moves the geometry along with the shape.
    store
        .update_geofence(
            tenant.id,
            zone.id,
            GeofencePatch {
                name: None,
                shape: Some(Shape::circle(0.0, 0.0, 500.0).expect("circle")),
            },
        )
        .await
        .expect("update");
    let kind: String = sqlx::query_scalar("SELECT GeometryType(geom) FROM geofences WHERE id = $1")
        .bind(zone.id.as_uuid())
        .fetch_one(&mut conn)
        .await
        .expect("type");
    assert_eq!(kind, "POINT");
    let _ = conn.close().await;
}

/// Retention on PostgreSQL drops a day's partition whole once every tenant
/// of the cell is done with it, and keeps the partitions someone still needs.
#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_whole_partitions() {
    use chrono::{Duration, Utc};
    use sqlx::Connection;
    use webhost_domain::{Attributes, Fix, Position, TenantId};
    use webhost_storage::{IngestBatch, NewPosition};

    let Some(fixture) = webhost_storage_tests::backends::postgres::cell().await else {
        return;
    };
    let store = fixture.store();
    let tenant = webhost_storage::CellTenant {
        id: TenantId::new(),
        plan: webhost_domain::PlanName::parse("hobby").expect("plan"),
        max_vehicles: 5,
        retention_days: 30,
    };
    store.put_tenant(tenant.clone()).await.expect("tenant");
    let vehicle = store
        .create_vehicle(
            tenant.id,
            webhost_storage::NewVehicle {
                id: webhost_domain::VehicleId::new(),
                name: webhost_domain::VehicleName::parse("Van").expect("name"),
                device_id: None,
                plate: None,
                group: None,
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("vehicle")
        .id;
    let now = Utc::now();
    let old_day = (now - Duration::days(40)).date_naive();
    let recent_day = (now - Duration::days(2)).date_naive();
    let rows: Vec<NewPosition> = [now - Duration::days(40), now - Duration::days(2)]
        .into_iter()
        .map(|time| NewPosition {
            tenant_id: tenant.id,
            position: Position {
                vehicle_id: vehicle,
                fix: Fix {
                    time,
                    lat: 1.0,
                    lon: 2.0,
                    speed: None,
                    heading: None,
                    altitude: None,
                    accuracy: None,
                    valid: true,
                    attributes: Attributes::default(),
                },
            },
        })
        .collect();
    store
        .insert_positions(IngestBatch::positions(&rows))
        .await
        .expect("insert");

    let url = fixture.postgres_url().expect("a PostgreSQL fixture");
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let exists = |day: chrono::NaiveDate| {
        format!(
            "SELECT to_regclass('positions_p{}') IS NOT NULL",
            day.format("%Y%m%d")
        )
    };
    let present: bool = sqlx::query_scalar(&exists(old_day))
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(present, "the insert created the old day's partition");

    let report = store
        .expire_positions(&[(tenant.id, now - Duration::days(30))])
        .await
        .expect("retention");
    assert!(report.partitions_dropped >= 1, "{report:?}");
    assert_eq!(report.positions_removed, 1);
    let present: bool = sqlx::query_scalar(&exists(old_day))
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(!present, "the expired day's partition is gone");
    let present: bool = sqlx::query_scalar(&exists(recent_day))
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(present, "a day still kept stays");

    // Partitions for the week ahead are made by the maintenance step.
    store
        .prepare_ahead(now + Duration::days(30))
        .await
        .expect("ahead");
    let ahead = (now + Duration::days(36)).date_naive();
    let present: bool = sqlx::query_scalar(&exists(ahead))
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(present, "partitions are created ahead");
}
