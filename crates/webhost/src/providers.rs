//! The remote providers this control plane may use, from the settings
//! (SPEC §2): `hetzner` when `HETZNER_API_TOKEN` (Cloud) and/or
//! `HETZNER_ROBOT_USER` + `HETZNER_ROBOT_PASSWORD` (dedicated servers) are
//! set, `fly` when `FLY_API_TOKEN` is. A provider whose credentials are set
//! but whose other settings are missing is a start-up error naming what to
//! set — never a cell that boots without its control URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::ExposeSecret;
use webhost_provider::Provider;
use webhost_provider_fly::{Fly, FlyConfig, FlyPostgres};
use webhost_provider_hetzner::{
    CloudConfig, Hetzner, HetznerCloud, HetznerRobot, RobotConfig, SshRunner,
};
use webhost_provider_http::RetryPolicy;

use crate::settings::Settings;

/// Managed Postgres major version for Fly.io cells.
const FLY_PG_MAJOR: u32 = 16;

/// The configured remote providers (none in the embedded default).
pub fn configured(settings: &Settings) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    let cloud_token = settings.hetzner_api_token.as_ref();
    let robot = settings
        .hetzner_robot_user
        .as_ref()
        .zip(settings.hetzner_robot_password.as_ref());
    if settings.hetzner_robot_user.is_some() != settings.hetzner_robot_password.is_some() {
        anyhow::bail!("set both HETZNER_ROBOT_USER and HETZNER_ROBOT_PASSWORD, or neither");
    }
    if cloud_token.is_some() || robot.is_some() {
        let cell_domain = need(&settings.cell_domain, "WEBHOST_CELL_DOMAIN", "hetzner")?;
        let bootstrap = bootstrap(settings, "hetzner")?;
        let cloud = cloud_token
            .map(|token| {
                HetznerCloud::new(CloudConfig {
                    endpoint: settings
                        .hcloud_endpoint
                        .clone()
                        .unwrap_or_else(|| webhost_provider_hetzner::DEFAULT_ENDPOINT.into()),
                    token: token.expose_secret().to_string(),
                    server_type: settings.hetzner_server_type.clone(),
                    image: settings.hetzner_image.clone(),
                    cell_domain: cell_domain.clone(),
                    bootstrap: bootstrap.clone(),
                    usd_per_eur: settings.usd_per_eur,
                    retry: RetryPolicy::default(),
                })
            })
            .transpose()?;
        let robot = match robot {
            Some((user, password)) => {
                let keys = need(
                    &settings.ssh_key_fingerprints,
                    "WEBHOST_SSH_KEY_FINGERPRINTS",
                    "hetzner (Robot)",
                )?;
                let identity = settings.ssh_identity_file.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "WEBHOST_SSH_IDENTITY_FILE must be set to use the hetzner provider (Robot): \
                         the private key the bootstrap logs in to a new dedicated server with"
                    )
                })?;
                Some(HetznerRobot::new(RobotConfig {
                    endpoint: settings
                        .hetzner_robot_url
                        .clone()
                        .unwrap_or_else(|| webhost_provider_hetzner::ROBOT_ENDPOINT.into()),
                    user: user.clone(),
                    password: password.expose_secret().to_string(),
                    product: settings.robot_product.clone(),
                    dist: settings.robot_dist.clone(),
                    lang: "en".into(),
                    authorized_keys: keys
                        .split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect(),
                    cell_domain,
                    bootstrap: bootstrap.clone(),
                    test_orders: settings.robot_test_orders,
                    usd_per_eur: settings.usd_per_eur,
                    retry: RetryPolicy::default(),
                    runner: Arc::new(SshRunner {
                        identity_file: identity,
                        deploy_url: need(&settings.deploy_url, "WEBHOST_DEPLOY_URL", "hetzner")?,
                    }),
                })?)
            }
            None => None,
        };
        providers.push(Arc::new(Hetzner::new(cloud, robot)));
    }
    if let Some(token) = &settings.fly_api_token {
        let mut secrets: BTreeMap<String, String> =
            bootstrap(settings, "fly")?.into_iter().collect();
        secrets.insert("WEBHOST_MODE".into(), "production".into());
        providers.push(Arc::new(Fly::new(FlyConfig {
            endpoint: settings
                .fly_flaps_base_url
                .clone()
                .unwrap_or_else(|| webhost_provider_fly::DEFAULT_ENDPOINT.into()),
            token: token.expose_secret().to_string(),
            org_slug: need(&settings.fly_org, "FLY_ORG", "fly")?,
            app_prefix: settings.fly_app_prefix.clone(),
            image: need(&settings.cell_image, "WEBHOST_CELL_IMAGE", "fly")?,
            volume_gb: settings.fly_volume_gb,
            cpus: settings.fly_cpus,
            memory_mb: settings.fly_memory_mb,
            secrets,
            postgres: settings.fly_postgres_plan.clone().map(|plan| FlyPostgres {
                plan,
                disk_gb: settings.fly_postgres_disk_gb,
                pg_major: FLY_PG_MAJOR,
            }),
            retry: RetryPolicy::default(),
        })?));
    }
    Ok(providers)
}

fn need(value: &Option<String>, name: &str, provider: &str) -> anyhow::Result<String> {
    value
        .clone()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("{name} must be set to use the {provider} provider"))
}

/// What every remote cell boots with: where the control plane is, the
/// shared secrets, the image and the deploy bundle.
fn bootstrap(settings: &Settings, provider: &str) -> anyhow::Result<Vec<(String, String)>> {
    let secret = |value: Option<&secrecy::SecretString>, name: &str| {
        value
            .map(|s| s.expose_secret().to_string())
            .ok_or_else(|| anyhow::anyhow!("{name} must be set to use the {provider} provider"))
    };
    let mut values = vec![
        (
            "WEBHOST_CONTROL_URL".to_string(),
            need(&settings.control_url, "WEBHOST_CONTROL_URL", provider)?,
        ),
        (
            "WEBHOST_ADMIN_TOKEN".to_string(),
            secret(settings.webhost_admin_token.as_ref(), "WEBHOST_ADMIN_TOKEN")?,
        ),
        (
            "SECRET_KEY_BASE".to_string(),
            secret(settings.secret_key_base.as_ref(), "SECRET_KEY_BASE")?,
        ),
        (
            "TOKEN_SIGNING_SECRET".to_string(),
            secret(
                settings.token_signing_secret.as_ref(),
                "TOKEN_SIGNING_SECRET",
            )?,
        ),
        (
            "WEBHOST_IMAGE".to_string(),
            need(&settings.cell_image, "WEBHOST_CELL_IMAGE", provider)?,
        ),
    ];
    if provider == "hetzner" {
        values.push((
            "WEBHOST_DEPLOY_URL".to_string(),
            need(&settings.deploy_url, "WEBHOST_DEPLOY_URL", provider)?,
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Mode, Overrides};

    fn settings(env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().expect("temp dir");
        Settings::load_from(
            &Overrides {
                mode: Some(Mode::Embedded),
                data_dir: Some(dir.path().to_path_buf()),
                ..Overrides::default()
            },
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn no_credentials_no_remote_providers() {
        let settings = settings(&[]).expect("settings");
        assert!(configured(&settings).expect("providers").is_empty());
    }

    #[test]
    fn a_provider_with_credentials_but_not_its_settings_names_what_to_set() {
        let err = configured(&settings(&[("FLY_API_TOKEN", "t")]).expect("settings"))
            .err()
            .expect("refused");
        assert!(format!("{err}").contains("WEBHOST_CONTROL_URL"), "{err}");

        let err = configured(
            &settings(&[
                ("HETZNER_API_TOKEN", "t"),
                ("WEBHOST_CONTROL_URL", "https://control.example.com"),
            ])
            .expect("settings"),
        )
        .err()
        .expect("refused");
        assert!(format!("{err}").contains("WEBHOST_CELL_DOMAIN"), "{err}");

        let err = configured(&settings(&[("HETZNER_ROBOT_USER", "u")]).expect("settings"))
            .err()
            .expect("refused");
        assert!(format!("{err}").contains("HETZNER_ROBOT_PASSWORD"), "{err}");
    }

    #[test]
    fn hetzner_cloud_and_fly_are_configured_from_their_variables() {
        let settings = settings(&[
            ("HETZNER_API_TOKEN", "t"),
            ("HCLOUD_ENDPOINT", "http://127.0.0.1:1/v1"),
            ("FLY_API_TOKEN", "f"),
            ("FLY_ORG", "acme"),
            ("WEBHOST_CONTROL_URL", "https://control.example.com"),
            ("WEBHOST_CELL_DOMAIN", "cells.example.com"),
            ("WEBHOST_CELL_IMAGE", "registry.example.com/webhost:1"),
            ("WEBHOST_DEPLOY_URL", "https://example.com/deploy.tar.gz"),
        ])
        .expect("settings");
        let kinds: Vec<_> = configured(&settings)
            .expect("providers")
            .iter()
            .map(|p| p.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                webhost_domain::ProviderKind::Hetzner,
                webhost_domain::ProviderKind::Fly
            ]
        );
    }
}
