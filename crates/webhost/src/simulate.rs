//! `webhost simulate`: drives simulated vehicles along plausible routes
//! through the public API (`POST /api/v1/positions`, in batches) or the
//! OsmAnd device protocol (one request per fix).
//!
//! The route model ([`Route`]) is a road-like random walk, pure and
//! deterministic for a seed: each vehicle cruises at a speed picked for the
//! kind of road it is on (20–110 km/h), accelerates and brakes within
//! [`MAX_ACCEL`] / [`MAX_DECEL`], changes heading smoothly (gentle curves, and
//! turns at intersections at most [`MAX_TURN_RATE`]), stops at red lights
//! for 15–60 s and parks for 5–30 minutes after 20–60 minutes of driving.
//! It is integrated in steps of at most one second whatever the reporting
//! interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Highest speed a simulated vehicle reaches, km/h.
pub const MAX_SPEED: f64 = 110.0;
/// Lowest cruising speed, km/h (vehicles go slower only when stopping or
/// turning).
pub const MIN_CRUISE: f64 = 20.0;
/// Acceleration limit, m/s².
pub const MAX_ACCEL: f64 = 2.5;
/// Braking limit, m/s² (a firm but ordinary stop).
pub const MAX_DECEL: f64 = 4.0;
/// Fastest heading change, degrees per second (an intersection turn).
pub const MAX_TURN_RATE: f64 = 20.0;
/// Speed through an intersection turn, km/h.
const TURN_SPEED: f64 = 25.0;
/// Fastest heading change on a curve, degrees per second.
const CURVE_RATE: f64 = 3.0;
const METRES_PER_DEGREE: f64 = 111_320.0;

/// The kind of road a vehicle is on decides its cruising speed and whether
/// there are traffic lights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Road {
    Residential,
    Urban,
    Arterial,
    Highway,
}

impl Road {
    /// Cruising speeds, km/h.
    fn cruise(self) -> (f64, f64) {
        match self {
            Road::Residential => (MIN_CRUISE, 30.0),
            Road::Urban => (30.0, 50.0),
            Road::Arterial => (50.0, 70.0),
            Road::Highway => (80.0, MAX_SPEED),
        }
    }

    /// Metres between traffic lights.
    fn lights_every(self) -> Option<(f64, f64)> {
        match self {
            Road::Residential => Some((400.0, 1_500.0)),
            Road::Urban => Some((250.0, 800.0)),
            Road::Arterial => Some((500.0, 1_500.0)),
            Road::Highway => None,
        }
    }

    /// Length of a stretch of this road, metres.
    fn length(self) -> (f64, f64) {
        match self {
            Road::Residential => (300.0, 1_500.0),
            Road::Urban => (800.0, 4_000.0),
            Road::Arterial => (1_500.0, 6_000.0),
            Road::Highway => (5_000.0, 20_000.0),
        }
    }

    /// The road after this one: mostly a neighbour in the hierarchy.
    fn next(self, rng: &mut StdRng) -> Road {
        let roll: f64 = rng.gen();
        match self {
            Road::Residential => {
                if roll < 0.7 {
                    Road::Urban
                } else {
                    Road::Residential
                }
            }
            Road::Urban => {
                if roll < 0.25 {
                    Road::Residential
                } else if roll < 0.6 {
                    Road::Urban
                } else {
                    Road::Arterial
                }
            }
            Road::Arterial => {
                if roll < 0.4 {
                    Road::Urban
                } else if roll < 0.75 {
                    Road::Arterial
                } else {
                    Road::Highway
                }
            }
            Road::Highway => {
                if roll < 0.6 {
                    Road::Arterial
                } else {
                    Road::Highway
                }
            }
        }
    }
}

/// What a vehicle is doing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activity {
    Driving,
    /// Braking to a stop, then standing for `dwell_s`.
    Stopping {
        dwell_s: f64,
        parking: bool,
    },
    /// Standing (a red light or parked) for `remaining_s` more seconds.
    Stopped {
        remaining_s: f64,
        parking: bool,
    },
}

/// One report of a simulated vehicle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the route started.
    pub elapsed_s: f64,
    pub lat: f64,
    pub lon: f64,
    /// km/h.
    pub speed: f64,
    /// Degrees clockwise from north, in [0, 360).
    pub heading: f64,
    pub activity: Activity,
}

/// A vehicle's route, advanced step by step. Deterministic: the same seed
/// and start give the same samples.
#[derive(Clone, Debug)]
pub struct Route {
    rng: StdRng,
    elapsed_s: f64,
    lat: f64,
    lon: f64,
    heading: f64,
    speed: f64,
    road: Road,
    cruise: f64,
    road_left_m: f64,
    next_light_m: f64,
    until_parking_s: f64,
    /// Current curve rate, degrees per second.
    curve_rate: f64,
    /// Heading change still to make for an intersection turn, degrees.
    turn_left: f64,
    activity: Activity,
}

fn uniform(rng: &mut StdRng, (low, high): (f64, f64)) -> f64 {
    rng.gen_range(low..=high)
}

/// `heading` normalised into [0, 360).
fn wrap(heading: f64) -> f64 {
    heading.rem_euclid(360.0)
}

/// The smallest signed difference `to - from` between two headings.
pub fn heading_delta(from: f64, to: f64) -> f64 {
    let d = (to - from).rem_euclid(360.0);
    if d > 180.0 {
        d - 360.0
    } else {
        d
    }
}

impl Route {
    /// A vehicle parked at (`lat`, `lon`) about to leave, facing a random way.
    pub fn new(seed: u64, lat: f64, lon: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let road = Road::Urban;
        let heading = rng.gen_range(0.0..360.0);
        let cruise = uniform(&mut rng, road.cruise());
        let road_left_m = uniform(&mut rng, road.length());
        let next_light_m = uniform(&mut rng, road.lights_every().unwrap_or((500.0, 500.0)));
        let until_parking_s = rng.gen_range(20.0..=60.0) * 60.0;
        Self {
            rng,
            elapsed_s: 0.0,
            lat,
            lon,
            heading,
            speed: 0.0,
            road,
            cruise,
            road_left_m,
            next_light_m,
            until_parking_s,
            curve_rate: 0.0,
            turn_left: 0.0,
            activity: Activity::Driving,
        }
    }

    /// Vehicle `index` of a simulation seeded with `seed`, starting within
    /// about 10 km of (`lat`, `lon`).
    pub fn for_vehicle(seed: u64, index: u64, lat: f64, lon: f64) -> Self {
        let vehicle_seed = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut place = StdRng::seed_from_u64(vehicle_seed.rotate_left(17));
        let distance = 10_000.0 * place.gen::<f64>().sqrt();
        let bearing: f64 = place.gen_range(0.0..std::f64::consts::TAU);
        let dlat = distance * bearing.cos() / METRES_PER_DEGREE;
        let dlon = distance * bearing.sin() / (METRES_PER_DEGREE * lat.to_radians().cos());
        Self::new(vehicle_seed, lat + dlat, lon + dlon)
    }

    pub fn sample(&self) -> Sample {
        Sample {
            elapsed_s: self.elapsed_s,
            lat: self.lat,
            lon: self.lon,
            speed: self.speed,
            heading: self.heading,
            activity: self.activity,
        }
    }

    /// Advances by `seconds` in steps of at most one second; the sample at
    /// the end.
    pub fn advance(&mut self, seconds: f64) -> Sample {
        let mut left = seconds.max(0.0);
        while left > 1e-9 {
            let dt = left.min(1.0);
            self.step(dt);
            left -= dt;
        }
        self.sample()
    }

    fn step(&mut self, dt: f64) {
        self.elapsed_s += dt;
        match self.activity {
            Activity::Stopped {
                remaining_s,
                parking,
            } => {
                self.speed = 0.0;
                let remaining_s = remaining_s - dt;
                if remaining_s > 0.0 {
                    self.activity = Activity::Stopped {
                        remaining_s,
                        parking,
                    };
                } else {
                    self.activity = Activity::Driving;
                    if parking {
                        // Leave the parking spot: a new street, a new way.
                        self.until_parking_s = self.rng.gen_range(20.0..=60.0) * 60.0;
                        self.enter_road(Road::Residential);
                        self.turn_left = if self.rng.gen_bool(0.5) { 90.0 } else { -90.0 };
                    }
                }
                return;
            }
            Activity::Stopping { dwell_s, parking } => {
                // Brake comfortably, never harder than the limit.
                let new_speed = (self.speed - 0.6 * MAX_DECEL * 3.6 * dt).max(0.0);
                self.travel(new_speed, dt);
                if self.speed <= 0.0 {
                    self.activity = Activity::Stopped {
                        remaining_s: dwell_s,
                        parking,
                    };
                }
                return;
            }
            Activity::Driving => {}
        }

        // Due to park?
        self.until_parking_s -= dt;
        if self.until_parking_s <= 0.0 {
            let dwell_s = self.rng.gen_range(5.0..=30.0) * 60.0;
            self.activity = Activity::Stopping {
                dwell_s,
                parking: true,
            };
            return self.step_stopping(dt);
        }

        // A traffic light within braking distance: red or green.
        let braking_m = (self.speed / 3.6).powi(2) / (2.0 * 0.6 * MAX_DECEL) + 5.0;
        if self.road.lights_every().is_some() && self.next_light_m <= braking_m {
            self.next_light_m = self.light_gap();
            if self.rng.gen_bool(0.4) {
                let dwell_s = self.rng.gen_range(15.0..=60.0);
                self.activity = Activity::Stopping {
                    dwell_s,
                    parking: false,
                };
                return self.step_stopping(dt);
            }
        }

        // Heading: an intersection turn in progress, else a gentle curve.
        if self.turn_left.abs() > 1e-9 {
            let change = self
                .turn_left
                .clamp(-MAX_TURN_RATE * dt, MAX_TURN_RATE * dt);
            self.heading = wrap(self.heading + change);
            self.turn_left -= change;
        } else {
            let jitter: f64 = self.rng.gen_range(-1.0..=1.0);
            self.curve_rate =
                (0.9 * self.curve_rate + jitter * 0.8 * dt).clamp(-CURVE_RATE, CURVE_RATE);
            self.heading = wrap(self.heading + self.curve_rate * dt);
        }

        // Speed: towards the cruising speed (slow for a turn), within limits.
        let target = if self.turn_left.abs() > 1e-9 {
            self.cruise.min(TURN_SPEED)
        } else {
            self.cruise + self.rng.gen_range(-1.5..=1.5)
        };
        let up = MAX_ACCEL * 3.6 * dt;
        let down = 0.6 * MAX_DECEL * 3.6 * dt;
        let new_speed = (self.speed + (target - self.speed).clamp(-down, up)).clamp(0.0, MAX_SPEED);
        self.travel(new_speed, dt);

        if self.road_left_m <= 0.0 {
            let next = self.road.next(&mut self.rng);
            let turn = next != self.road || self.rng.gen_bool(0.3);
            self.enter_road(next);
            if turn {
                self.turn_left = if self.rng.gen_bool(0.5) { 90.0 } else { -90.0 };
            }
        }
    }

    fn step_stopping(&mut self, dt: f64) {
        // Undo the time `step` counted before delegating.
        self.elapsed_s -= dt;
        self.step(dt);
    }

    fn light_gap(&mut self) -> f64 {
        match self.road.lights_every() {
            Some(range) => uniform(&mut self.rng, range),
            None => f64::INFINITY,
        }
    }

    fn enter_road(&mut self, road: Road) {
        self.road = road;
        self.cruise = uniform(&mut self.rng, road.cruise());
        self.road_left_m = uniform(&mut self.rng, road.length());
        self.next_light_m = self.light_gap();
    }

    /// Moves along the heading at the mean of the old and new speeds.
    fn travel(&mut self, new_speed: f64, dt: f64) {
        let metres = (self.speed + new_speed) / 2.0 / 3.6 * dt;
        self.speed = new_speed;
        let heading = self.heading.to_radians();
        self.lat += metres * heading.cos() / METRES_PER_DEGREE;
        self.lon += metres * heading.sin() / (METRES_PER_DEGREE * self.lat.to_radians().cos());
        self.road_left_m -= metres;
        self.next_light_m -= metres;
    }
}

/// The samples of a route every `interval_s` seconds, `count` of them after
/// the start. Pure: the same arguments give the same samples.
pub fn route(seed: u64, lat: f64, lon: f64, interval_s: f64, count: usize) -> Vec<Sample> {
    let mut route = Route::new(seed, lat, lon);
    (0..count).map(|_| route.advance(interval_s)).collect()
}

// ---------------------------------------------------------------------------
// The command.

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `POST /api/v1/positions` in batches (up to 10,000 per request).
    Api,
    /// One OsmAnd request per fix, as a phone running Traccar Client sends.
    Osmand,
}

fn positive_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(format!("'{raw}' is not a positive number of seconds")),
    }
}

/// `webhost simulate`
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// An API key of the account (`whk_…`) or a user token.
    #[arg(long, env = "WEBHOST_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// How many vehicles to drive; missing ones are created (with device ids).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub vehicles: u32,
    /// Seconds between two fixes of a vehicle.
    #[arg(long, value_parser = positive_seconds)]
    pub interval: f64,
    /// The public URL of WebHost (the edge).
    #[arg(long, default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// How fixes are sent.
    #[arg(long, value_enum, default_value_t = Protocol::Api)]
    pub protocol: Protocol,
    /// The OsmAnd listener, for `--protocol osmand`.
    #[arg(long, default_value = "http://127.0.0.1:5055")]
    pub osmand_url: String,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Seed of the routes (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Latitude of the centre of the area the vehicles start in (within
    /// about 10 km).
    #[arg(long, default_value_t = 52.52, allow_negative_numbers = true)]
    pub lat: f64,
    /// Longitude of that centre.
    #[arg(long, default_value_t = 13.405, allow_negative_numbers = true)]
    pub lon: f64,
}

#[derive(Clone, Debug, Deserialize)]
struct VehicleView {
    id: String,
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Deserialize)]
struct VehiclePage {
    data: Vec<VehicleView>,
    next_cursor: Option<String>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, count: u64, message: String) {
        self.errors.fetch_add(count, Ordering::Relaxed);
        *self.last_error.lock().expect("counter lock") = Some(message);
    }
}

/// The error message of a SPEC error body, or the raw text.
fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("{status}: {message}")
}

async fn list_vehicles(
    client: &reqwest::Client,
    args: &SimulateArgs,
) -> anyhow::Result<Vec<VehicleView>> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/vehicles?limit=1000", args.url);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = client
            .get(&url)
            .bearer_auth(&args.api_key)
            .send()
            .await
            .with_context(|| format!("listing vehicles at {}", args.url))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("listing vehicles: {}", error_message(status, &text));
        }
        let page: VehiclePage = serde_json::from_str(&text).context("reading the vehicle list")?;
        all.extend(page.data);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// The vehicles to drive: existing ones first (with a device id for
/// OsmAnd), then new ones until there are `args.vehicles`.
async fn fleet(client: &reqwest::Client, args: &SimulateArgs) -> anyhow::Result<Vec<VehicleView>> {
    let mut vehicles: Vec<VehicleView> = list_vehicles(client, args)
        .await?
        .into_iter()
        .filter(|v| args.protocol == Protocol::Api || v.device_id.is_some())
        .take(args.vehicles as usize)
        .collect();
    let missing = args.vehicles as usize - vehicles.len();
    if missing > 0 {
        check_plan_room(client, args, missing).await?;
        println!("creating {missing} vehicles");
    }
    let prefix: u32 = rand::random();
    for k in 0..missing {
        let number = vehicles.len() + 1;
        let response = client
            .post(format!("{}/api/v1/vehicles", args.url))
            .bearer_auth(&args.api_key)
            .json(&json!({
                "name": format!("Simulated {number}"),
                "device_id": format!("sim-{prefix:08x}-{k}"),
            }))
            .send()
            .await
            .context("creating a vehicle")?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!(
                "creating vehicle {number} of {}: {} (lower --vehicles or change the plan)",
                args.vehicles,
                error_message(status, &text)
            );
        }
        vehicles.push(serde_json::from_str(&text).context("reading the created vehicle")?);
    }
    Ok(vehicles)
}

/// Refuses early when the plan cannot hold `missing` more vehicles (when
/// the subscription is readable; otherwise creating tells).
async fn check_plan_room(
    client: &reqwest::Client,
    args: &SimulateArgs,
    missing: usize,
) -> anyhow::Result<()> {
    let Ok(response) = client
        .get(format!("{}/api/v1/subscription", args.url))
        .bearer_auth(&args.api_key)
        .send()
        .await
    else {
        return Ok(());
    };
    let Ok(subscription) = response.json::<Value>().await else {
        return Ok(());
    };
    let (Some(limit), Some(used)) = (
        subscription["limits"]["vehicles"].as_u64(),
        subscription["usage"]["vehicles"].as_u64(),
    ) else {
        return Ok(());
    };
    if used + missing as u64 > limit {
        bail!(
            "the {} plan allows {limit} vehicles and the account has {used}; {missing} more are \
             needed for --vehicles {}{} (lower --vehicles or change the plan)",
            subscription["plan"].as_str().unwrap_or("current"),
            args.vehicles,
            if args.protocol == Protocol::Osmand {
                " with device ids"
            } else {
                ""
            }
        );
    }
    Ok(())
}

struct Fix {
    vehicle: usize,
    time: DateTime<Utc>,
    sample: Sample,
}

fn api_item(vehicle: &VehicleView, fix: &Fix) -> Value {
    json!({
        "vehicle_id": vehicle.id,
        "time": fix.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lat": fix.sample.lat,
        "lon": fix.sample.lon,
        "speed": (fix.sample.speed * 10.0).round() / 10.0,
        "heading": fix.sample.heading.round(),
    })
}

fn osmand_url(base: &str, device: &str, fix: &Fix) -> String {
    format!(
        "{base}/?id={device}&lat={:.6}&lon={:.6}&timestamp={}&speed={:.1}&bearing={:.0}",
        fix.sample.lat,
        fix.sample.lon,
        fix.time.timestamp_millis(),
        fix.sample.speed / 1.852,
        fix.sample.heading,
    )
}

/// Sends one tick's fixes: batches of up to 10,000 for the API, one request
/// per fix for OsmAnd, each holding an in-flight permit until answered.
async fn send_tick(
    client: &reqwest::Client,
    args: &SimulateArgs,
    vehicles: &Arc<Vec<VehicleView>>,
    fixes: Vec<Fix>,
    permits: &Arc<Semaphore>,
    counters: &Arc<Counters>,
) {
    match args.protocol {
        Protocol::Api => {
            for chunk in fixes.chunks(10_000) {
                let body: Vec<Value> = chunk
                    .iter()
                    .map(|fix| api_item(&vehicles[fix.vehicle], fix))
                    .collect();
                let count = body.len() as u64;
                let permit = permits.clone().acquire_owned().await.expect("open");
                let request = client
                    .post(format!("{}/api/v1/positions", args.url))
                    .bearer_auth(&args.api_key)
                    .json(&body);
                let counters = counters.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            let text = response.text().await.unwrap_or_default();
                            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            let accepted = answer["accepted"].as_u64().unwrap_or(0);
                            counters.accepted.fetch_add(accepted, Ordering::Relaxed);
                            if !status.is_success() || accepted < count {
                                let detail = answer["rejected"][0]["error"]
                                    .as_str()
                                    .map(|e| format!("{status}: rejected: {e}"))
                                    .unwrap_or_else(|| error_message(status, &text));
                                counters.error(count - accepted.min(count), detail);
                            }
                        }
                        Err(err) => counters.error(count, format!("request failed: {err}")),
                    }
                });
            }
        }
        Protocol::Osmand => {
            for fix in fixes {
                let Some(device) = vehicles[fix.vehicle].device_id.as_deref() else {
                    continue;
                };
                let url = osmand_url(&args.osmand_url, device, &fix);
                let permit = permits.clone().acquire_owned().await.expect("open");
                let request = client.get(url);
                let counters = counters.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            counters.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            let status = response.status();
                            let text = response.text().await.unwrap_or_default();
                            counters.error(1, error_message(status, &text));
                        }
                        Err(err) => counters.error(1, format!("request failed: {err}")),
                    }
                });
            }
        }
    }
}

/// Runs `webhost simulate` until Ctrl-C or `--duration`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let args = SimulateArgs {
        url: args.url.trim_end_matches('/').to_string(),
        osmand_url: args.osmand_url.trim_end_matches('/').to_string(),
        ..args
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let vehicles = Arc::new(fleet(&client, &args).await?);
    let mut routes: Vec<Route> = (0..vehicles.len())
        .map(|i| Route::for_vehicle(seed, i as u64, args.lat, args.lon))
        .collect();
    let limit = vehicles.len() * 10;
    let permits = Arc::new(Semaphore::new(limit));
    let counters = Arc::new(Counters::default());
    println!(
        "simulating {} vehicles every {} s via {:?} (seed {seed}); Ctrl-C stops",
        vehicles.len(),
        args.interval,
        args.protocol
    );

    let started = tokio::time::Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let (mut tick, mut sent, mut reported_accepted, mut reported_errors) = (0u64, 0u64, 0, 0);
    loop {
        let stop_at = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = stop_at => break,
            _ = ticker.tick() => {}
        }
        // The first tick reports where the vehicles are; later ones advance.
        let step = if tick == 0 { 0.0 } else { args.interval };
        let now = Utc::now();
        let fixes: Vec<Fix> = routes
            .iter_mut()
            .enumerate()
            .map(|(vehicle, route)| Fix {
                vehicle,
                time: now,
                sample: route.advance(step),
            })
            .collect();
        let count = fixes.len() as u64;
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = send_tick(&client, &args, &vehicles, fixes, &permits, &counters) => {}
        }
        sent += count;
        tick += 1;
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        println!(
            "tick {tick} ({:.0} s): sent {count}; answered since the last tick: accepted {}, \
             errors {}; in flight {}",
            started.elapsed().as_secs_f64(),
            accepted - reported_accepted,
            errors - reported_errors,
            limit - permits.available_permits()
        );
        if errors > reported_errors {
            if let Some(message) = counters.last_error.lock().expect("counter lock").take() {
                println!("  last error: {message}");
            }
        }
        (reported_accepted, reported_errors) = (accepted, errors);
    }

    // Let what is in flight finish (bounded), then report the totals.
    let drained = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(limit as u32))
        .await
        .is_ok();
    println!(
        "stopped after {:.0} s: {tick} ticks, sent {sent}, accepted {}, errors {}{}",
        started.elapsed().as_secs_f64(),
        counters.accepted.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        if drained {
            ""
        } else {
            " (some requests were still in flight)"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn arguments_parse_with_defaults() {
        let args = parse(&[
            "--api-key",
            "whk_x",
            "--vehicles",
            "25",
            "--interval",
            "2.5",
        ])
        .expect("parses");
        assert_eq!(args.api_key, "whk_x");
        assert_eq!(args.vehicles, 25);
        assert_eq!(args.interval, 2.5);
        assert_eq!(args.url, "http://127.0.0.1:4000");
        assert_eq!(args.protocol, Protocol::Api);
        assert_eq!(args.osmand_url, "http://127.0.0.1:5055");
        assert_eq!(args.duration, None);

        let args = parse(&[
            "--api-key",
            "k",
            "--vehicles",
            "3",
            "--interval",
            "1",
            "--protocol",
            "osmand",
            "--osmand-url",
            "http://h:1",
            "--duration",
            "60",
            "--seed",
            "7",
            "--lat",
            "-33.9",
        ])
        .expect("parses");
        assert_eq!(args.protocol, Protocol::Osmand);
        assert_eq!(args.duration, Some(60.0));
        assert_eq!(args.seed, Some(7));
        assert_eq!(args.lat, -33.9);
    }

    #[test]
    fn arguments_are_checked() {
        // Missing or invalid values are refused before anything runs.
        assert!(
            parse(&["--vehicles", "3", "--interval", "1"]).is_err() || {
                // The key may come from WEBHOST_API_KEY in the environment.
                std::env::var_os("WEBHOST_API_KEY").is_some()
            }
        );
        for bad in [
            ["--vehicles", "0", "--interval", "1"],
            ["--vehicles", "3", "--interval", "0"],
            ["--vehicles", "3", "--interval", "-1"],
            ["--vehicles", "x", "--interval", "1"],
        ] {
            let mut args = vec!["--api-key", "k"];
            args.extend(bad);
            assert!(parse(&args).is_err(), "{bad:?}");
        }
        assert!(parse(&[
            "--api-key",
            "k",
            "--vehicles",
            "1",
            "--interval",
            "1",
            "--protocol",
            "teltonika"
        ])
        .is_err());
    }

    /// A 1 Hz trace of `hours` of driving.
    fn trace(seed: u64, hours: f64) -> Vec<Sample> {
        route(seed, 52.52, 13.405, 1.0, (hours * 3600.0) as usize)
    }

    #[test]
    fn routes_are_deterministic_per_seed() {
        assert_eq!(trace(1, 0.5), trace(1, 0.5));
        assert_ne!(trace(1, 0.5), trace(2, 0.5));
        // The reporting interval does not change the path: 10 s samples are
        // every tenth 1 s sample.
        let fine = route(3, 52.0, 13.0, 1.0, 600);
        let coarse = route(3, 52.0, 13.0, 10.0, 60);
        for (i, sample) in coarse.iter().enumerate() {
            let same = fine[i * 10 + 9];
            assert!((sample.lat - same.lat).abs() < 1e-9);
            assert!((sample.speed - same.speed).abs() < 1e-9);
        }
        // Vehicles of one simulation start apart, and reproducibly.
        let a = Route::for_vehicle(9, 0, 52.52, 13.405).sample();
        let b = Route::for_vehicle(9, 1, 52.52, 13.405).sample();
        assert_ne!((a.lat, a.lon), (b.lat, b.lon));
        assert_eq!(a, Route::for_vehicle(9, 0, 52.52, 13.405).sample());
        assert!((a.lat - 52.52).abs() < 0.1 && (a.lon - 13.405).abs() < 0.2);
    }

    #[test]
    fn speeds_stay_in_bounds_and_change_within_the_limits() {
        for seed in 0..8 {
            let samples = trace(seed, 4.0);
            let mut previous = 0.0;
            let mut cruising = Vec::new();
            for s in &samples {
                assert!((0.0..=MAX_SPEED).contains(&s.speed), "seed {seed}: {s:?}");
                let change = (s.speed - previous) / 3.6; // m/s over one second
                assert!(
                    change <= MAX_ACCEL + 1e-9,
                    "seed {seed}: accelerates {change}"
                );
                assert!(change >= -MAX_DECEL - 1e-9, "seed {seed}: brakes {change}");
                previous = s.speed;
                if s.activity == Activity::Driving && s.speed > 0.0 {
                    cruising.push(s.speed);
                }
            }
            // Vehicles really drive, at road-like speeds.
            let mean = cruising.iter().sum::<f64>() / cruising.len() as f64;
            assert!(
                (MIN_CRUISE..=90.0).contains(&mean),
                "seed {seed}: mean {mean}"
            );
            let fastest = cruising.iter().copied().fold(0.0, f64::max);
            assert!(fastest >= 30.0, "seed {seed}: never above {fastest}");
        }
    }

    #[test]
    fn headings_change_continuously() {
        for seed in 0..8 {
            let samples = trace(seed, 4.0);
            let mut turned = 0.0;
            for pair in samples.windows(2) {
                let delta = heading_delta(pair[0].heading, pair[1].heading);
                assert!(
                    delta.abs() <= MAX_TURN_RATE + 1e-9,
                    "seed {seed}: heading jumps {delta} at {}",
                    pair[1].elapsed_s
                );
                assert!((0.0..360.0).contains(&pair[1].heading));
                turned += delta.abs();
            }
            assert!(turned > 180.0, "seed {seed}: the route never turns");
            // Positions move by at most what the speed allows.
            for pair in samples.windows(2) {
                let dlat = (pair[1].lat - pair[0].lat) * METRES_PER_DEGREE;
                let dlon = (pair[1].lon - pair[0].lon)
                    * METRES_PER_DEGREE
                    * pair[0].lat.to_radians().cos();
                let metres = (dlat * dlat + dlon * dlon).sqrt();
                assert!(
                    metres <= MAX_SPEED / 3.6 + 0.5,
                    "seed {seed}: jumps {metres} m"
                );
            }
        }
    }

    /// Runs of standing still, in seconds.
    fn stops(samples: &[Sample]) -> Vec<f64> {
        let mut runs = Vec::new();
        let mut current = 0.0;
        for s in samples {
            if s.speed == 0.0 {
                current += 1.0;
            } else if current > 0.0 {
                runs.push(current);
                current = 0.0;
            }
        }
        runs
    }

    #[test]
    fn vehicles_stop_at_lights_and_park() {
        for seed in 0..8 {
            let runs = stops(&trace(seed, 3.0));
            let lights = runs.iter().filter(|&&r| (10.0..=90.0).contains(&r)).count();
            let parked = runs.iter().filter(|&&r| r >= 300.0).count();
            assert!(lights >= 3, "seed {seed}: {lights} light stops in {runs:?}");
            assert!(parked >= 1, "seed {seed}: never parks: {runs:?}");
        }
    }
}
