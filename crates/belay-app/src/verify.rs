//! `belay audit verify`: the whole chain, then every signed checkpoint against it.

use std::collections::HashMap;

use belay_audit::{Broken, Checkpoint, Verifier};

use crate::{App, Error};

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub checkpoints: usize,
    /// The first problem; `None` when the log is intact.
    pub broken: Option<String>,
}

const PAGE: usize = 10_000;

/// Verifies the chain from the first event and every checkpoint in the checkpoint file.
pub fn verify_audit(app: &App) -> Result<VerifyReport, Error> {
    let checkpoints = read_checkpoints(&app.config.audit.checkpoint_file)?;
    let wanted: HashMap<u64, ()> = checkpoints.iter().map(|c| (c.seq, ())).collect();
    let mut hashes: HashMap<u64, String> = HashMap::new();
    let mut verifier = Verifier::default();
    let mut from = 1;
    let mut broken: Option<Broken> = None;
    'pages: loop {
        let page = app.store().events(from, PAGE)?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            if let Err(b) = verifier.next(event) {
                broken = Some(b);
                break 'pages;
            }
            if wanted.contains_key(&event.seq) {
                hashes.insert(event.seq, event.hash.clone());
            }
        }
        from = page.last().map_or(from, |e| e.seq + 1);
    }
    if let Some(b) = broken {
        return Ok(VerifyReport {
            events: verifier.verified(),
            checkpoints: checkpoints.len(),
            broken: Some(b.to_string()),
        });
    }
    for checkpoint in &checkpoints {
        if let Err(e) = checkpoint.verify(
            app.public_key(),
            hashes.get(&checkpoint.seq).map(String::as_str),
        ) {
            return Ok(VerifyReport {
                events: verifier.verified(),
                checkpoints: checkpoints.len(),
                broken: Some(e.to_string()),
            });
        }
    }
    Ok(VerifyReport {
        events: verifier.verified(),
        checkpoints: checkpoints.len(),
        broken: None,
    })
}

fn read_checkpoints(path: &std::path::Path) -> Result<Vec<Checkpoint>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io(format!("cannot read `{}`: {e}", path.display()))),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::Invalid(format!(
                    "{}:{}: not a checkpoint: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}
