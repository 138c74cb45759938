//! Leases: acquire, renew and release, each one SQL statement on the lease's
//! row in `mcp_leases`.
//!
//! This file owns those statements. The rules are the core's (the same as
//! the in-memory and redb stores): a grant to a new holder, or after expiry
//! or release, takes the row's token plus one, incremented by the database
//! in the statement that grants; a renewal by the live holder keeps it.
//! Expiry is the `now` the caller passes plus the TTL, in milliseconds since
//! the epoch: the database's clock is never read, so every host sharing the
//! store judges expiry by the same rule as the other stores. Rows are never
//! deleted, so the newest token survives releases and fencing keeps working.

use std::time::Duration;

use mcp_lifecycle::ports::Lease;
use mcp_lifecycle::{Error, Result, Timestamp};
use sqlx::{PgPool, Row};

use crate::errors::map_sqlx;

/// `$1` key, `$2` holder, `$3` now, `$4` the new expiry. The row is inserted
/// with token 1, or, if it exists, updated only when it is free (released or
/// expired at `now`) or already held by `$2`; the `WHERE` of `ON CONFLICT DO
/// UPDATE` sees the newest committed row under its lock, so of two hosts
/// racing for a free lease exactly one updates it. No row returned: another
/// holder's lease is live.
const ACQUIRE: &str = "INSERT INTO mcp_leases AS l (key, holder, token, expires_at_ms) \
     VALUES ($1, $2, 1, $4) \
     ON CONFLICT (key) DO UPDATE SET \
       token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at_ms > $3 \
                    THEN l.token ELSE l.token + 1 END, \
       holder = EXCLUDED.holder, \
       expires_at_ms = EXCLUDED.expires_at_ms \
     WHERE l.holder IS NULL OR l.expires_at_ms <= $3 OR l.holder = EXCLUDED.holder \
     RETURNING token, expires_at_ms";

/// `$1` key, `$2` holder, `$3` token, `$4` the new expiry. Renews only the
/// holding the caller has (same holder and token; an expired holding nobody
/// took over is still current), and says who holds the lease otherwise.
const RENEW: &str = "WITH renewed AS ( \
       UPDATE mcp_leases SET expires_at_ms = $4 \
       WHERE key = $1 AND holder = $2 AND token = $3 \
       RETURNING expires_at_ms) \
     SELECT (SELECT expires_at_ms FROM renewed) AS renewed_until, \
       (SELECT holder FROM mcp_leases WHERE key = $1) AS holder";

/// `$1` key, `$2` holder, `$3` token: frees the holding if it is the
/// caller's, keeping the token; otherwise changes nothing.
const RELEASE: &str = "UPDATE mcp_leases SET holder = NULL, expires_at_ms = NULL \
     WHERE key = $1 AND holder = $2 AND token = $3";

/// Milliseconds since the epoch as the database stores them (saturating:
/// times past the year 292 million are all "never").
fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

fn token_of(lease: &Lease) -> i64 {
    // A token above i64::MAX was never granted: -1 matches no row.
    i64::try_from(lease.token).unwrap_or(-1)
}

fn lease(key: &str, holder: &str, token: i64, expires_at_ms: i64) -> Lease {
    Lease {
        key: key.to_owned(),
        holder: holder.to_owned(),
        token: u64::try_from(token).unwrap_or(0),
        expires_at: Timestamp::from_millis(u64::try_from(expires_at_ms).unwrap_or(0)),
    }
}

/// The statements on leases, bound to one pool.
pub(crate) struct Leases<'a> {
    pub(crate) pool: &'a PgPool,
    /// `host:port`, for errors.
    pub(crate) server: &'a str,
}

impl Leases<'_> {
    pub(crate) async fn acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let doing = || format!("acquiring lease {key} for {holder}");
        let row = sqlx::query(ACQUIRE)
            .bind(key)
            .bind(holder)
            .bind(millis(now))
            .bind(millis(now.saturating_add(ttl)))
            .fetch_optional(self.pool)
            .await
            .map_err(|e| map_sqlx(self.server, doing(), e))?;
        let Some(row) = row else { return Ok(None) };
        let token: i64 = row
            .try_get("token")
            .map_err(|e| map_sqlx(self.server, doing(), e))?;
        let expires: i64 = row
            .try_get("expires_at_ms")
            .map_err(|e| map_sqlx(self.server, doing(), e))?;
        Ok(Some(lease(key, holder, token, expires)))
    }

    pub(crate) async fn renew(&self, held: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease> {
        let doing = || format!("renewing lease {} for {}", held.key, held.holder);
        let row = sqlx::query(RENEW)
            .bind(&held.key)
            .bind(&held.holder)
            .bind(token_of(held))
            .bind(millis(now.saturating_add(ttl)))
            .fetch_one(self.pool)
            .await
            .map_err(|e| map_sqlx(self.server, doing(), e))?;
        let renewed: Option<i64> = row
            .try_get("renewed_until")
            .map_err(|e| map_sqlx(self.server, doing(), e))?;
        let current: Option<String> = row
            .try_get("holder")
            .map_err(|e| map_sqlx(self.server, doing(), e))?;
        match renewed {
            Some(until) => Ok(lease(&held.key, &held.holder, token_of(held), until)),
            None => Err(Error::LeaseHeld {
                lease: held.key.clone(),
                holder: current.unwrap_or_else(|| "no one (it was released)".to_owned()),
            }),
        }
    }

    pub(crate) async fn release(&self, held: &Lease) -> Result<()> {
        sqlx::query(RELEASE)
            .bind(&held.key)
            .bind(&held.holder)
            .bind(token_of(held))
            .execute(self.pool)
            .await
            .map_err(|e| {
                map_sqlx(
                    self.server,
                    format!("releasing lease {} for {}", held.key, held.holder),
                    e,
                )
            })?;
        Ok(())
    }
}
