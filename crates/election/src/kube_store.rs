//! The lease on the Kubernetes API: `coordination.k8s.io/v1` Lease, with
//! `metadata.resourceVersion` as the compare-and-swap.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::{LeaseRecord, LeaseStore, StoreError};

/// The annotation holding the writer's lease duration in milliseconds:
/// `spec.leaseDurationSeconds` has whole seconds only.
pub const LEASE_DURATION_MS_ANNOTATION: &str = "bcs-apiserver-proxy/lease-duration-ms";

/// Why a [`KubeLeases`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeLeasesError {
    #[error("no apiserver to reach the lease through")]
    NoApiservers,
    #[error("building a client for apiserver {index}")]
    Client {
        index: usize,
        #[source]
        source: kube::Error,
    },
}

/// One Lease, reached through any of several apiservers: a request that
/// cannot reach one (no answer within the request timeout, or an error)
/// moves on to the next for the following request, so that the holder's
/// own apiserver dying or hanging does not cost it the lease (every
/// apiserver reads and writes the same etcd).
#[derive(Clone)]
pub struct KubeLeases {
    apis: Vec<Api<Lease>>,
    current: usize,
    name: String,
    namespace: String,
    request_timeout: Duration,
    /// The Lease as last read or written, so that a write keeps what
    /// others put on it (labels, annotations, fields we do not know).
    last: Option<Lease>,
}

impl std::fmt::Debug for KubeLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLeases")
            .field("apiservers", &self.apis.len())
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl KubeLeases {
    /// The Lease `namespace/name` through a client per apiserver
    /// (`configs`), tried in turn; a request not answered within
    /// `request_timeout` counts as failed (give it less than the renew
    /// deadline, so that the holder still has time for another apiserver).
    ///
    /// The clients do not retry by themselves: kube's default retries a 503
    /// up to 15 times with a growing pause, which would keep a holder
    /// asking one apiserver cut off from etcd well past its deadline
    /// instead of the next one. The election's rounds are the retries.
    pub fn new(
        configs: Vec<kube::Config>,
        namespace: &str,
        name: &str,
        request_timeout: Duration,
    ) -> Result<KubeLeases, KubeLeasesError> {
        if configs.is_empty() {
            return Err(KubeLeasesError::NoApiservers);
        }
        let mut apis = Vec::with_capacity(configs.len());
        for (index, mut config) in configs.into_iter().enumerate() {
            config.default_retry = false;
            let client = kube::Client::try_from(config)
                .map_err(|source| KubeLeasesError::Client { index, source })?;
            apis.push(Api::namespaced(client, namespace));
        }
        Ok(KubeLeases {
            apis,
            current: 0,
            name: name.to_string(),
            namespace: namespace.to_string(),
            request_timeout,
            last: None,
        })
    }

    fn api(&self) -> Api<Lease> {
        self.apis[self.current % self.apis.len()].clone()
    }

    fn pass_over(&mut self) {
        self.current = (self.current + 1) % self.apis.len();
    }

    /// Runs one request against the current apiserver. Anything but an
    /// answer or a conflict leaves this apiserver for the next one: one
    /// that did not answer in time, and one that answered with an error (an
    /// apiserver cut off from etcd's quorum answers 5xx, or hangs, while
    /// the others may still write).
    /// `conflicts` are the HTTP codes that mean the version we wrote on is
    /// gone (409, and 404 for a write on a Lease deleted since).
    async fn ask<T>(
        &mut self,
        op: &str,
        conflicts: &[u16],
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, StoreError> {
        let what = format!("{op} lease {}/{}", self.namespace, self.name);
        let e = match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(answer)) => return Ok(answer),
            Err(_) => {
                self.pass_over();
                return Err(StoreError::Unavailable(format!(
                    "{what}: no answer within {} ms",
                    self.request_timeout.as_millis()
                )));
            }
            Ok(Err(e)) => e,
        };
        if let kube::Error::Api(status) = &e
            && conflicts.contains(&status.code)
        {
            return Err(StoreError::Conflict);
        }
        self.pass_over();
        Err(match e {
            kube::Error::Api(status) => StoreError::Unavailable(format!(
                "{what}: the apiserver answered {} {}: {}",
                status.code, status.reason, status.message
            )),
            other => StoreError::Unavailable(format!("{what}: {other}")),
        })
    }

    /// The Lease to send for `r`: the one last read when `r` is a write on
    /// its version (so labels, annotations and unknown fields stay), a new
    /// one otherwise.
    fn to_lease(&self, r: &LeaseRecord) -> Lease {
        let time = |t: &Option<String>| t.as_deref().and_then(|s| s.parse().ok()).map(MicroTime);
        let mut lease = match &self.last {
            Some(last) if r.version.is_some() && last.metadata.resource_version == r.version => {
                last.clone()
            }
            _ => Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: None,
            },
        };
        lease.metadata.resource_version = r.version.clone();
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match r.lease_duration_ms {
            Some(ms) => annotations.insert(LEASE_DURATION_MS_ANNOTATION.into(), ms.to_string()),
            None => annotations.remove(LEASE_DURATION_MS_ANNOTATION),
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = r.holder.clone();
        spec.lease_duration_seconds = r.lease_duration_seconds;
        spec.lease_transitions = Some(r.transitions);
        spec.acquire_time = time(&r.acquire_time);
        spec.renew_time = time(&r.renew_time);
        lease
    }

    fn keep(&mut self, lease: Lease) -> LeaseRecord {
        let record = record_of(&lease);
        self.last = Some(lease);
        record
    }
}

/// What the election reads of a Lease.
pub(crate) fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        lease_duration_seconds: spec.lease_duration_seconds,
        lease_duration_ms: lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEASE_DURATION_MS_ANNOTATION))
            .and_then(|ms| ms.parse().ok()),
        transitions: spec.lease_transitions.unwrap_or(0),
        acquire_time: spec.acquire_time.map(|t| t.0.to_string()),
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        version: lease.metadata.resource_version.clone(),
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&mut self) -> Result<Option<LeaseRecord>, StoreError> {
        let (api, name) = (self.api(), self.name.clone());
        let got = self.ask("read", &[], api.get_opt(&name)).await?;
        Ok(got.map(|lease| self.keep(lease)))
    }

    async fn create(&mut self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let mut lease = self.to_lease(record);
        lease.metadata.resource_version = None;
        let api = self.api();
        let made = self
            .ask("create", &[409], api.create(&PostParams::default(), &lease))
            .await?;
        Ok(self.keep(made))
    }

    async fn replace(&mut self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        if record.version.is_none() {
            // Without a version the apiserver would overwrite blindly.
            return Err(StoreError::Unavailable(
                "refusing to replace a lease without its resourceVersion".into(),
            ));
        }
        let lease = self.to_lease(record);
        let (api, name) = (self.api(), self.name.clone());
        // 404: the Lease was deleted since we read it, so the version we
        // wrote on is gone, as in a conflict.
        let replaced = self
            .ask(
                "write",
                &[409, 404],
                api.replace(&name, &PostParams::default(), &lease),
            )
            .await?;
        Ok(self.keep(replaced))
    }
}
