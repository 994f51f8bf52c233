//! The lease on the Kubernetes API: `coordination.k8s.io/v1` Lease, with
//! `metadata.resourceVersion` as the compare-and-swap.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::{LeaseRecord, LeaseStore, StoreError};

/// One Lease, reached through any of several apiservers: a request that
/// cannot reach one moves on to the next for the following request, so
/// that the holder's own apiserver dying does not cost it the lease (every
/// apiserver reads and writes the same etcd).
#[derive(Clone)]
pub struct KubeLeases {
    apis: Vec<Api<Lease>>,
    current: usize,
    name: String,
    namespace: String,
}

impl std::fmt::Debug for KubeLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLeases")
            .field("apiservers", &self.apis.len())
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

impl KubeLeases {
    /// The Lease `namespace/name` through a client per apiserver
    /// (`configs`), tried in turn.
    ///
    /// The clients do not retry by themselves: kube's default retries a 503
    /// up to 15 times with a growing pause, which would keep a holder
    /// asking one apiserver cut off from etcd well past its deadline
    /// instead of the next one. The election's rounds are the retries.
    pub fn new(
        configs: Vec<kube::Config>,
        namespace: &str,
        name: &str,
    ) -> Result<KubeLeases, kube::Error> {
        let mut apis = Vec::with_capacity(configs.len());
        for mut config in configs {
            config.default_retry = false;
            apis.push(Api::namespaced(kube::Client::try_from(config)?, namespace));
        }
        Ok(KubeLeases {
            apis,
            current: 0,
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    fn api(&self) -> Result<&Api<Lease>, StoreError> {
        self.apis
            .get(self.current)
            .ok_or_else(|| StoreError::Unavailable("no apiserver to ask".into()))
    }

    /// Turns kube's error into ours. Anything but a conflict leaves this
    /// apiserver for the next one: one that did not answer, and one that
    /// answered with an error (an apiserver cut off from etcd's quorum
    /// answers 5xx while the others may still write).
    fn error(&mut self, op: &str, e: kube::Error) -> StoreError {
        if let kube::Error::Api(status) = &e
            && status.code == 409
        {
            return StoreError::Conflict;
        }
        if !self.apis.is_empty() {
            self.current = (self.current + 1) % self.apis.len();
        }
        match e {
            kube::Error::Api(status) => StoreError::Unavailable(format!(
                "{op} lease {}/{}: the apiserver answered {} {}: {}",
                self.namespace, self.name, status.code, status.reason, status.message
            )),
            other => StoreError::Unavailable(format!(
                "{op} lease {}/{}: {other}",
                self.namespace, self.name
            )),
        }
    }

    fn to_lease(&self, r: &LeaseRecord) -> Lease {
        let time = |t: &Option<String>| t.as_deref().and_then(|s| s.parse().ok()).map(MicroTime);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: r.version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: r.holder.clone(),
                lease_duration_seconds: r.lease_duration_seconds,
                lease_transitions: Some(r.transitions),
                acquire_time: time(&r.acquire_time),
                renew_time: time(&r.renew_time),
                ..LeaseSpec::default()
            }),
        }
    }
}

/// What the election reads of a Lease.
pub(crate) fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        lease_duration_seconds: spec.lease_duration_seconds,
        transitions: spec.lease_transitions.unwrap_or(0),
        acquire_time: spec.acquire_time.map(|t| t.0.to_string()),
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        version: lease.metadata.resource_version.clone(),
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&mut self) -> Result<Option<LeaseRecord>, StoreError> {
        let got = self.api()?.get_opt(&self.name).await;
        match got {
            Ok(lease) => Ok(lease.as_ref().map(record_of)),
            Err(e) => Err(self.error("read", e)),
        }
    }

    async fn create(&mut self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let mut lease = self.to_lease(record);
        lease.metadata.resource_version = None;
        let made = self.api()?.create(&PostParams::default(), &lease).await;
        match made {
            Ok(lease) => Ok(record_of(&lease)),
            Err(e) => Err(self.error("create", e)),
        }
    }

    async fn replace(&mut self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        if record.version.is_none() {
            // Without a version the apiserver would overwrite blindly.
            return Err(StoreError::Unavailable(
                "refusing to replace a lease without its resourceVersion".into(),
            ));
        }
        let lease = self.to_lease(record);
        let replaced = self
            .api()?
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
        match replaced {
            Ok(lease) => Ok(record_of(&lease)),
            Err(e) => Err(self.error("write", e)),
        }
    }
}
