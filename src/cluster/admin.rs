//! The operator's commands on a cluster's state in NATS (`chatd accounts
//! --cluster URL ...`, `chatd audit --cluster URL`): one short-lived
//! connection and a small runtime of their own, each call waiting for
//! NATS's answer.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use super::link::{Edit, audit_stream, bucket, edit_account};
use super::{AccountRecord, moderation};
use crate::chat::moderation::AuditEntry;

/// How long one call may wait for NATS.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Admin {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
    accounts: kv::Store,
    cluster: String,
}

impl Admin {
    /// Connects to the cluster `cluster` through `urls`; makes its
    /// accounts bucket and audit stream if no node has yet.
    pub fn connect(urls: &[String], cluster: &str) -> Result<Admin, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let (js, accounts) = runtime.block_on(async {
            let connect = async_nats::ConnectOptions::new()
                .name("chatd operator")
                .connection_timeout(Duration::from_secs(5))
                .connect(urls);
            let client = tokio::time::timeout(TIMEOUT, connect)
                .await
                .map_err(|_| format!("NATS at {urls:?} did not answer in time"))?
                .map_err(|e| format!("cannot reach NATS at {urls:?}: {e}"))?;
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(5))
                .build(client);
            let accounts = bucket(&js, &format!("{cluster}_accounts"))
                .await
                .map_err(|e| e.to_string())?;
            audit_stream(&js, cluster)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((js, accounts))
        })?;
        Ok(Admin {
            runtime,
            js,
            accounts,
            cluster: cluster.to_string(),
        })
    }

    fn run<T>(&self, work: impl Future<Output = Result<T, String>>) -> Result<T, String> {
        self.runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, work)
                .await
                .map_err(|_| "NATS did not answer in time".to_string())?
        })
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, String> {
        self.run(async {
            let mut keys = self
                .accounts
                .keys()
                .await
                .map_err(|e| format!("cannot list accounts: {e}"))?;
            let mut records = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| format!("cannot list accounts: {e}"))?;
                let value = self
                    .accounts
                    .get(&key)
                    .await
                    .map_err(|e| format!("cannot read account {key}: {e}"))?;
                if let Some(record) = value.and_then(|v| serde_json::from_slice(&v).ok()) {
                    records.push(record);
                }
            }
            records.sort_by(|a: &AccountRecord, b| a.name.cmp(&b.name));
            Ok(records)
        })
    }

    /// Registers an account; false if the name is registered.
    pub fn add(&self, record: &AccountRecord) -> Result<bool, String> {
        let key = record.name.to_ascii_lowercase();
        let value = serde_json::to_vec(record).expect("strings encode");
        self.run(async {
            match self.accounts.create(&key, value.into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(format!("cannot register: {e}")),
            }
        })
    }

    /// Edits the account `name`; false if there is none.
    pub fn edit(&self, name: &str, edit: Edit) -> Result<bool, String> {
        self.run(edit_account(&self.accounts, name, &edit))
    }

    /// Deletes the account `name`; false if there is none.
    pub fn delete(&self, name: &str) -> Result<bool, String> {
        let key = name.to_ascii_lowercase();
        self.run(async {
            let entry = self
                .accounts
                .entry(key.clone())
                .await
                .map_err(|e| format!("cannot read the account: {e}"))?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                return Ok(false);
            };
            self.accounts
                .delete_expect_revision(&key, Some(entry.revision))
                .await
                .map(|_| true)
                .map_err(|e| format!("cannot delete the account: {e}"))
        })
    }

    /// Adds an entry to the cluster's audit.
    pub fn audit(&self, entry: &AuditEntry) -> Result<(), String> {
        let subject = moderation::audit_subject(&self.cluster);
        let payload = moderation::encode_audit(entry);
        self.run(async {
            let ack = self
                .js
                .publish(subject, payload.into())
                .await
                .map_err(|e| format!("cannot audit: {e}"))?;
            ack.await
                .map(|_| ())
                .map_err(|e| format!("cannot audit: {e}"))
        })
    }

    /// The newest `limit` audit entries of the cluster, newest first.
    pub fn audited(&self, limit: usize) -> Result<Vec<AuditEntry>, String> {
        self.run(async {
            let mut stream = self
                .js
                .get_stream(moderation::audit_stream(&self.cluster))
                .await
                .map_err(|e| format!("cannot open the audit: {e}"))?;
            let state = stream
                .info()
                .await
                .map_err(|e| format!("cannot read the audit: {e}"))?
                .state
                .clone();
            let mut entries = Vec::new();
            let mut seq = state.last_sequence;
            while seq >= state.first_sequence.max(1) && entries.len() < limit {
                if let Ok(m) = stream.get_raw_message(seq).await
                    && let Some(entry) = moderation::decode_audit(&m.payload)
                {
                    entries.push(entry);
                }
                seq -= 1;
            }
            Ok(entries)
        })
    }
}
