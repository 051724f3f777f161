//! A bounded cache of analyses keyed by the exact statement text, so that a statement an
//! application sends again and again is parsed once.
//!
//! Sharded so that gateway threads rarely wait on one another; each shard evicts its oldest
//! entry when full (first in, first out), which costs O(1) and needs no bookkeeping on a hit.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use crate::analysis::Analysis;

const SHARDS: usize = 16;

#[derive(Debug)]
pub(crate) struct Cache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Arc<str>, Arc<Analysis>>,
    order: VecDeque<Arc<str>>,
}

impl Cache {
    /// A cache holding at most about `capacity` analyses; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Cache {
        let per_shard = capacity.div_ceil(SHARDS);
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> Option<&Mutex<Shard>> {
        if self.per_shard == 0 {
            return None;
        }
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards.get(index)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Analysis>> {
        let shard = self.shard(key)?.lock().ok()?;
        shard.map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: &str, analysis: Arc<Analysis>) {
        let Some(Ok(mut shard)) = self.shard(key).map(Mutex::lock) else {
            return;
        };
        if shard.map.contains_key(key) {
            return;
        }
        while shard.map.len() >= self.per_shard {
            match shard.order.pop_front() {
                Some(oldest) => {
                    shard.map.remove(&oldest);
                }
                None => break,
            }
        }
        let key: Arc<str> = Arc::from(key);
        shard.order.push_back(key.clone());
        shard.map.insert(key, analysis);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.map.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use belay_core::Class;

    fn analysis() -> Arc<Analysis> {
        Arc::new(Analysis {
            class: Class::Read,
            statements: Vec::new(),
        })
    }

    #[test]
    fn stays_within_capacity() {
        let cache = Cache::new(32);
        for i in 0..1000 {
            cache.insert(&format!("SELECT {i}"), analysis());
        }
        assert!(cache.len() <= 32, "cache grew to {}", cache.len());
        assert!(
            cache.get("SELECT 999").is_some(),
            "the newest entry is kept"
        );
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = Cache::new(0);
        cache.insert("SELECT 1", analysis());
        assert!(cache.get("SELECT 1").is_none());
    }
}
