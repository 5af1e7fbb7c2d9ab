//! What the counter store holds, as JSON objects (docs/grid.md, "The counter").
use serde::{Deserialize, Serialize};

/// A volume of a stream, by the id its journal and replicas name it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VolumeRef {
    pub id: String,
}

/// Where a stream's object replica is; never its credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicaRef {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StreamInfo {
    pub stream: String,
    pub cg: String,
    pub host: String,
    /// When it first registered: bookmarks before it do not expect its mark.
    pub since_ns: i64,
    pub volumes: Vec<VolumeRef>,
    pub replicas: Vec<ReplicaRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Value {
    pub value: u64,
    pub name: String,
    /// The taking request's unique id: whose create it was.
    pub id: String,
    pub by: String,
    pub time_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mark {
    pub stream: String,
    pub value: u64,
    pub name: String,
    pub after_delta: u64,
    pub last_write: Option<u64>,
    pub time_ns: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GridBookmark {
    #[serde(flatten)]
    pub value: Value,
    pub marks: Vec<Mark>,
    /// Streams registered before the value was taken that have no mark.
    pub missing: Vec<String>,
    /// Another value owns the name (or none does: its taking stopped before it
    /// claimed it): this one is void.
    pub duplicate: bool,
    pub complete: bool,
}

/// The head hint's object.
#[derive(Serialize, Deserialize)]
pub(super) struct Head {
    pub value: u64,
}

/// A name's owner: the request that claimed it.
#[derive(Serialize, Deserialize)]
pub(super) struct Claim {
    pub id: String,
    pub time_ns: i64,
}
