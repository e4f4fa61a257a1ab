//! The model catalog of a hive as the agent reports it, and what the queen tells the
//! agent about the Hugging Face hub.
//!
//! Model ids: `org/repo:file.gguf` for a file downloaded from the hub (stored under
//! `<install_dir>/models/org/repo/file.gguf`), `local:file.gguf` for a file pushed
//! from the operator's machine (stored under `<install_dir>/models/local/`).

use serde::{Deserialize, Serialize};

/// The prefix of the ids of pushed models.
pub const LOCAL_PREFIX: &str = "local:";

/// One model file in a hive's catalog.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// `org/repo:file.gguf` or `local:file.gguf`.
    pub id: String,
    /// The file name inside its repository, e.g. `model.Q4_K_M.gguf`.
    pub file: String,
    /// The absolute path on the hive.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// What the GGUF header says; absent when the header could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ModelMetadata>,
    /// Why the header could not be read, or why no engine of the worker would run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The engine a CPU worker would run it on (`cpu-avx512`, `candle`; `none` where it
    /// would refuse it, with the reason in `problem`), as the hive's worker binary
    /// plans it from the header; absent where no worker binary answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// Read from a GGUF file's header.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sum of the tensors' element counts.
    pub parameters: u64,
    /// e.g. `Q4_K_M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    pub chat_template: bool,
}

/// What a model download or push did on one hive: the entry it left in the catalog and
/// whether bytes moved.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ModelTransfer {
    pub model: ModelEntry,
    /// False when the hive already had the file.
    pub changed: bool,
    /// The sha256 the file was verified against; absent when none was announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What the agent needs to reach the hub: sent by the queen on the agent's stdin,
/// never on a command line (where `ps` would show the token).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
pub struct HubAccess {
    /// Base URL, e.g. `https://huggingface.co` or a mirror; `HF_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `HF_TOKEN`, for gated and private repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for HubAccess {
    // The token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubAccess")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Whether the agent answered `model-has` with the file present.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ModelPresence {
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_round_trips_and_the_token_stays_out_of_debug() {
        let transfer = ModelTransfer {
            model: ModelEntry {
                id: "org/repo:m.Q4_K_M.gguf".to_owned(),
                file: "m.Q4_K_M.gguf".to_owned(),
                path: "/h/models/org/repo/m.Q4_K_M.gguf".to_owned(),
                size: 42,
                metadata: Some(ModelMetadata {
                    architecture: Some("llama".to_owned()),
                    parameters: 135_000_000,
                    quantization: Some("Q4_K_M".to_owned()),
                    context_length: Some(8192),
                    chat_template: true,
                    ..ModelMetadata::default()
                }),
                problem: None,
                engine: Some("cpu-avx2".to_owned()),
            },
            changed: true,
            sha256: Some("ab".repeat(32)),
        };
        let json = serde_json::to_string(&transfer).expect("serialise");
        assert_eq!(
            serde_json::from_str::<ModelTransfer>(&json).expect("parse"),
            transfer
        );
        let access = HubAccess {
            endpoint: Some("http://mirror".to_owned()),
            token: Some("hf_secret".to_owned()),
        };
        assert!(!format!("{access:?}").contains("hf_secret"));
    }
}
