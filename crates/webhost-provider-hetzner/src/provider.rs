//! The `hetzner` provider as the control plane sees it: one provider, two
//! kinds of server. A template's `kind` picks the API — `dedicated`
//! through Robot, `cloud` through the Cloud API; a template without one
//! gets a dedicated server when Robot is configured, a cloud server
//! otherwise. What was made says which API to poll and destroy it with
//! (`detail.kind`).

use async_trait::async_trait;
use webhost_domain::{CellTemplate, ProviderKind, ServerKind};
use webhost_provider::{CellSpec, Progress, Provider, Refused, Resource};

use crate::{HetznerCloud, HetznerRobot};

pub struct Hetzner {
    cloud: Option<HetznerCloud>,
    robot: Option<HetznerRobot>,
}

impl Hetzner {
    /// Either part may be missing (its credentials are not set); asking
    /// for that kind of server is then refused with what to set.
    pub fn new(cloud: Option<HetznerCloud>, robot: Option<HetznerRobot>) -> Self {
        Self { cloud, robot }
    }

    /// The kind a template asks for here.
    fn kind_for(&self, template: &CellTemplate) -> ServerKind {
        template.kind.unwrap_or(if self.robot.is_some() {
            ServerKind::Dedicated
        } else {
            ServerKind::Cloud
        })
    }

    /// The kind of what was made (a resource from before `detail.kind`, or
    /// the empty one a cleanup passes, goes by the template).
    fn kind_of(&self, spec: &CellSpec, resource: &Resource) -> ServerKind {
        resource.detail["kind"]
            .as_str()
            .and_then(ServerKind::parse)
            .unwrap_or_else(|| self.kind_for(&spec.template))
    }

    fn part(&self, kind: ServerKind) -> anyhow::Result<&dyn Provider> {
        let part: Option<&dyn Provider> = match kind {
            ServerKind::Dedicated => self.robot.as_ref().map(|r| r as &dyn Provider),
            ServerKind::Cloud => self.cloud.as_ref().map(|c| c as &dyn Provider),
        };
        part.ok_or_else(|| {
            let set = match kind {
                ServerKind::Dedicated => "HETZNER_ROBOT_USER and HETZNER_ROBOT_PASSWORD",
                ServerKind::Cloud => "HETZNER_API_TOKEN",
            };
            Refused {
                what: format!("a Hetzner {} server", kind.as_str()),
                status: 401,
                body: format!("{set} must be set to make one"),
            }
            .into()
        })
    }
}

#[async_trait]
impl Provider for Hetzner {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hetzner
    }

    fn offers(&self, template: &CellTemplate) -> bool {
        self.part(self.kind_for(template)).is_ok()
    }

    fn slow_to_deliver(&self, template: &CellTemplate) -> bool {
        self.kind_for(template) == ServerKind::Dedicated
    }

    async fn create(&self, spec: &CellSpec) -> anyhow::Result<Resource> {
        self.part(self.kind_for(&spec.template))?.create(spec).await
    }

    async fn poll(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<Progress> {
        self.part(self.kind_of(spec, resource))?
            .poll(spec, resource)
            .await
    }

    async fn destroy(&self, spec: &CellSpec, resource: &Resource) -> anyhow::Result<()> {
        self.part(self.kind_of(spec, resource))?
            .destroy(spec, resource)
            .await
    }

    async fn monthly_cost_cents(&self, spec: &CellSpec) -> anyhow::Result<i64> {
        self.part(self.kind_for(&spec.template))?
            .monthly_cost_cents(spec)
            .await
    }
}
