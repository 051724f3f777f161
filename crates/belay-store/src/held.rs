//! The ledger keys of the events this process's audit writer has made durable in the last
//! few seconds, kept in memory: an upstream's reconciler asks for every key of the rows it
//! reads, once a second, and finds those here without a query of the audit log (a look-up
//! and a parse of the event's detail per key, a fifth of what the reconciler cost per
//! transaction). What the writer committed is held by definition; a key not found here (an
//! earlier run's, another process's, one asked for again or after a few seconds) is looked
//! up in the log as before.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a key stays at least; at most twice that.
const GENERATION: Duration = Duration::from_secs(5);

/// Keys in two generations: the current one takes new keys, and the one before it is
/// dropped whole when the current one is `GENERATION` old, so that keys nobody asks for (a
/// transaction whose ledger row rolled back) do not pile up.
#[derive(Debug)]
pub(crate) struct HeldKeys(Mutex<Generations>);

#[derive(Debug)]
struct Generations {
    current: HashSet<String>,
    previous: HashSet<String>,
    since: Instant,
}

impl HeldKeys {
    pub(crate) fn new() -> HeldKeys {
        HeldKeys(Mutex::new(Generations {
            current: HashSet::new(),
            previous: HashSet::new(),
            since: Instant::now(),
        }))
    }

    /// The writer made durable events with these keys.
    pub(crate) fn add<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let Ok(mut g) = self.0.lock() else { return };
        if g.since.elapsed() >= GENERATION {
            g.previous = std::mem::take(&mut g.current);
            g.since = Instant::now();
        }
        g.current.extend(keys.map(str::to_owned));
    }

    /// Which of `keys` are here, taken out (each is asked for once, when its row is about
    /// to go), and the others.
    pub(crate) fn take<'k>(&self, keys: &[&'k str]) -> (HashSet<String>, Vec<&'k str>) {
        let mut held = HashSet::new();
        let mut others = Vec::new();
        let Ok(mut g) = self.0.lock() else {
            return (held, keys.to_vec());
        };
        for &key in keys {
            if g.current.remove(key) || g.previous.remove(key) {
                held.insert(key.to_owned());
            } else {
                others.push(key);
            }
        }
        (held, others)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_once_and_others_are_left_to_the_log() {
        let held = HeldKeys::new();
        held.add(["a", "b"].into_iter());
        let (found, others) = held.take(&["a", "c"]);
        assert_eq!(found, ["a".to_owned()].into_iter().collect());
        assert_eq!(others, ["c"]);
        let (found, others) = held.take(&["a", "b"]);
        assert_eq!(found, ["b".to_owned()].into_iter().collect());
        assert_eq!(others, ["a"]);
    }
}
