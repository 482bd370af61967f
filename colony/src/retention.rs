//! Retention of stored records, per kind: every `retention_every`, records
//! older than their kind's retention (`--retention-kind KIND=AGE`, else
//! `--retention`) are deleted. Fleet taps and members stay (they are small,
//! and say what ran); their records go.

use crate::colony::{Colony, now_nanos};

pub async fn run(colony: Colony) {
    let mut stopping = colony.stopping();
    loop {
        enforce(&colony).await;
        tokio::select! {
            _ = tokio::time::sleep(colony.config().retention_every) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

pub async fn enforce(colony: &Colony) {
    let now = now_nanos();
    let config = colony.config();
    let store = colony.store();
    let mut deleted = 0;
    for (kind, age) in &config.retention {
        match store
            .expire(kind, now.saturating_sub(age.as_nanos() as u64))
            .await
        {
            Ok(n) => deleted += n,
            Err(err) => tracing::warn!(kind, error = %err, "retention"),
        }
    }
    let kinds: Vec<String> = config.retention.keys().cloned().collect();
    match store
        .expire_others(
            &kinds,
            now.saturating_sub(config.default_retention.as_nanos() as u64),
        )
        .await
    {
        Ok(n) => deleted += n,
        Err(err) => tracing::warn!(error = %err, "retention"),
    }
    if deleted > 0 {
        tracing::info!(deleted, "retention: old records deleted");
    }
}
