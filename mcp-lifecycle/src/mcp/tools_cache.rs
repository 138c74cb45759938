//! A per-server `tools/list` cache with a positive and a negative TTL,
//! dropped whenever the server's set of ready instances changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::Tool;

use crate::time::Timestamp;

enum Entry {
    Tools(Arc<Vec<Tool>>),
    Failed(String),
}

struct Cached {
    entry: Entry,
    /// The server's instance generation when this was fetched.
    generation: u64,
    expires_at: Timestamp,
}

/// See the module docs.
pub(crate) struct ToolsCache {
    positive_ttl: Duration,
    negative_ttl: Duration,
    entries: Mutex<HashMap<String, Cached>>,
}

/// What the cache knows.
pub(crate) enum Lookup {
    Hit(Arc<Vec<Tool>>),
    NegativeHit(String),
    Miss,
}

impl ToolsCache {
    pub(crate) fn new(positive_ttl: Duration, negative_ttl: Duration) -> Self {
        ToolsCache {
            positive_ttl,
            negative_ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, server: &str, generation: u64, now: Timestamp) -> Lookup {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(server) {
            Some(c) if c.generation == generation && now < c.expires_at => match &c.entry {
                Entry::Tools(t) => Lookup::Hit(t.clone()),
                Entry::Failed(e) => Lookup::NegativeHit(e.clone()),
            },
            _ => Lookup::Miss,
        }
    }

    pub(crate) fn put_tools(
        &self,
        server: &str,
        generation: u64,
        now: Timestamp,
        tools: Arc<Vec<Tool>>,
    ) {
        self.put(
            server,
            generation,
            now + self.positive_ttl,
            Entry::Tools(tools),
        );
    }

    pub(crate) fn put_failure(&self, server: &str, generation: u64, now: Timestamp, error: String) {
        self.put(
            server,
            generation,
            now + self.negative_ttl,
            Entry::Failed(error),
        );
    }

    fn put(&self, server: &str, generation: u64, expires_at: Timestamp, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                server.to_owned(),
                Cached {
                    entry,
                    generation,
                    expires_at,
                },
            );
    }

    pub(crate) fn forget(&self, server: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(server);
    }
}
