//! The lines of a hive agent session (`rbee-hive serve`): requests on its stdin,
//! replies on its stdout, one JSON object a line.

use serde::{Deserialize, Serialize};

use crate::event::JobEvent;

/// One request line of an agent session (`rbee-hive serve`): the same arguments as a
/// single run of the agent, and an id its replies carry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServeRequest {
    pub id: u64,
    pub args: Vec<String>,
}

/// One reply line of an agent session: an event of the request `id`; every request's
/// replies end with its terminal event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServeReply {
    pub id: u64,
    pub event: JobEvent,
}
