//! Records: get, list, and the compare-and-swap writes, each one SQL
//! statement.
//!
//! This file owns the statements on `mcp_records` and how their results
//! become a [`Version`] or the contract's errors. A write checks its
//! [`Precondition`] and its [`Fence`] in the same statement that writes:
//!
//! - `At(v)` is `UPDATE … WHERE version = v`, `Absent` is `INSERT … ON
//!   CONFLICT DO NOTHING`, `Any` is `INSERT … ON CONFLICT DO UPDATE`; the new
//!   version is `nextval('mcp_revision')`, the store-wide sequence.
//! - The fence is a `FOR SHARE` read of the lease's row in a CTE of the same
//!   statement, and the write's `WHERE` requires the writer's token to be no
//!   older than the row's. The share lock is held until the statement
//!   commits, so a grant of a newer token (an `UPDATE` of that row) either
//!   committed before (the write sees its token and is rejected) or waits
//!   until the write has committed: no write with an older token lands after
//!   a newer token was granted.
//!
//! Each statement also returns the newest token and the version the
//! statement saw, so a write that changed nothing is reported as
//! [`Error::Fenced`] (checked first, as the other stores do) or
//! [`Error::VersionConflict`]. It must not read then write in two statements.

use mcp_lifecycle::ports::{Fence, Precondition, Record, Version};
use mcp_lifecycle::{Error, Result};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::errors::map_sqlx;

/// The fence part of every write: `$3` is the fence's lease key (NULL for an
/// unfenced write), `$4` the writer's token (0 for an unfenced write).
/// `granted.newest` is the newest token granted for that lease (0: never).
macro_rules! fenced {
    ($body:literal) => {
        concat!(
            "WITH fence AS (SELECT token FROM mcp_leases WHERE key = $3 FOR SHARE), \
             granted AS (SELECT COALESCE((SELECT token FROM fence), 0) AS newest), ",
            $body
        )
    };
}

/// `Precondition::At`: `$5` the value, `$6` the expected version.
const PUT_AT: &str = fenced!(
    "written AS (UPDATE mcp_records SET value = $5, version = nextval('mcp_revision') \
       WHERE collection = $1 AND key = $2 AND version = $6 \
         AND (SELECT newest FROM granted) <= $4 \
       RETURNING version) \
     SELECT (SELECT version FROM written) AS written, (SELECT newest FROM granted) AS newest, \
       (SELECT version FROM mcp_records WHERE collection = $1 AND key = $2) AS found"
);

/// `Precondition::Absent`: `$5` the value.
const PUT_ABSENT: &str = fenced!(
    "written AS (INSERT INTO mcp_records (collection, key, version, value) \
       SELECT $1, $2, nextval('mcp_revision'), $5 WHERE (SELECT newest FROM granted) <= $4 \
       ON CONFLICT (collection, key) DO NOTHING \
       RETURNING version) \
     SELECT (SELECT version FROM written) AS written, (SELECT newest FROM granted) AS newest, \
       (SELECT version FROM mcp_records WHERE collection = $1 AND key = $2) AS found"
);

/// `Precondition::Any`: `$5` the value.
const PUT_ANY: &str = fenced!(
    "written AS (INSERT INTO mcp_records (collection, key, version, value) \
       SELECT $1, $2, nextval('mcp_revision'), $5 WHERE (SELECT newest FROM granted) <= $4 \
       ON CONFLICT (collection, key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value \
       RETURNING version) \
     SELECT (SELECT version FROM written) AS written, (SELECT newest FROM granted) AS newest, \
       NULL::bigint AS found"
);

/// Delete, `Precondition::At`: `$5` the expected version.
const DELETE_AT: &str = fenced!(
    "written AS (DELETE FROM mcp_records \
       WHERE collection = $1 AND key = $2 AND version = $5 \
         AND (SELECT newest FROM granted) <= $4 \
       RETURNING version) \
     SELECT (SELECT version FROM written) AS written, (SELECT newest FROM granted) AS newest, \
       (SELECT version FROM mcp_records WHERE collection = $1 AND key = $2) AS found"
);

/// Delete, `Precondition::Any`: succeeds whether or not the record exists.
const DELETE_ANY: &str = fenced!(
    "written AS (DELETE FROM mcp_records \
       WHERE collection = $1 AND key = $2 AND (SELECT newest FROM granted) <= $4 \
       RETURNING version) \
     SELECT (SELECT max(version) FROM written) AS written, (SELECT newest FROM granted) AS newest, \
       NULL::bigint AS found"
);

/// Delete, `Precondition::Absent`: writes nothing; succeeds if the record is
/// missing (and the fence is current).
const DELETE_ABSENT: &str = fenced!(
    "found AS (SELECT version FROM mcp_records WHERE collection = $1 AND key = $2) \
     SELECT NULL::bigint AS written, (SELECT newest FROM granted) AS newest, \
       (SELECT version FROM found) AS found"
);

/// What a write statement returned.
struct WriteOutcome {
    /// The version written (or deleted), if the statement changed a row.
    written: Option<i64>,
    /// The newest token granted for the fence's lease (0: none, or no fence).
    newest: i64,
    /// The version the statement's snapshot held (`None`: absent).
    found: Option<i64>,
}

impl WriteOutcome {
    fn from_row(row: &PgRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(WriteOutcome {
            written: row.try_get("written")?,
            newest: row.try_get("newest")?,
            found: row.try_get("found")?,
        })
    }

    /// The fence error if the fence is older than the newest grant.
    fn fenced(&self, fence: Option<&Fence>) -> Result<()> {
        match fence {
            Some(fence) if token_of(fence) < self.newest => Err(Error::Fenced {
                lease: fence.lease.clone(),
                token: fence.token,
                current: u64::try_from(self.newest).unwrap_or(0),
            }),
            _ => Ok(()),
        }
    }

    /// The conflict a write that changed nothing (and was not fenced) reports.
    fn conflict(&self, collection: &str, key: &str, expect: Precondition) -> Error {
        let expected = match expect {
            Precondition::Any => "any version".to_owned(),
            Precondition::Absent => "no record".to_owned(),
            Precondition::At(v) => v.to_string(),
        };
        let seen = self.found.map(|v| Version(u64::try_from(v).unwrap_or(0)));
        let found = match (seen, expect) {
            // The statement's snapshot agreed with the writer, so a concurrent
            // writer committed between the snapshot and the row lock.
            (Some(v), Precondition::At(want)) if v == want => {
                "a newer version written concurrently".to_owned()
            }
            (None, Precondition::Absent) => "a record created concurrently".to_owned(),
            (None, _) => "no record".to_owned(),
            (Some(v), _) => v.to_string(),
        };
        Error::VersionConflict {
            key: format!("{collection}/{key}"),
            expected,
            found,
        }
    }
}

/// A fence's token as the database stores it. Tokens above `i64::MAX` were
/// never granted; such a token is newer than any, so it is clamped.
fn token_of(fence: &Fence) -> i64 {
    i64::try_from(fence.token).unwrap_or(i64::MAX)
}

/// A version as the database stores it. Versions above `i64::MAX` were never
/// handed out, so `-1` (which no record has) makes the check fail as it must.
fn db_version(version: Version) -> i64 {
    i64::try_from(version.0).unwrap_or(-1)
}

/// A version read from the database (the sequence starts at 1).
fn version_of(stored: i64) -> Version {
    Version(u64::try_from(stored).unwrap_or(0))
}

/// The statements on records, bound to one pool.
pub(crate) struct Records<'a> {
    pub(crate) pool: &'a PgPool,
    /// `host:port`, for errors.
    pub(crate) server: &'a str,
}

impl Records<'_> {
    pub(crate) async fn get(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        let row = sqlx::query(
            "SELECT version, value FROM mcp_records WHERE collection = $1 AND key = $2",
        )
        .bind(collection)
        .bind(key)
        .fetch_optional(self.pool)
        .await
        .map_err(|e| map_sqlx(self.server, format!("reading {collection}/{key}"), e))?;
        let Some(row) = row else { return Ok(None) };
        let decode = || -> std::result::Result<Record, sqlx::Error> {
            Ok(Record {
                key: key.to_owned(),
                version: version_of(row.try_get("version")?),
                value: row.try_get("value")?,
            })
        };
        decode()
            .map(Some)
            .map_err(|e| map_sqlx(self.server, format!("decoding {collection}/{key}"), e))
    }

    pub(crate) async fn list(&self, collection: &str) -> Result<Vec<Record>> {
        let doing = || format!("listing collection {collection}");
        let rows = sqlx::query(
            "SELECT key, version, value FROM mcp_records WHERE collection = $1 ORDER BY key",
        )
        .bind(collection)
        .fetch_all(self.pool)
        .await
        .map_err(|e| map_sqlx(self.server, doing(), e))?;
        rows.iter()
            .map(|row| {
                Ok(Record {
                    key: row.try_get("key")?,
                    version: version_of(row.try_get("version")?),
                    value: row.try_get("value")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(|e| map_sqlx(self.server, doing(), e))
    }

    /// Runs one fenced write statement (`PUT_*` with `value`, `DELETE_*`
    /// without): binds collection, key, the fence's lease and token, the
    /// value, and the expected version for `At`; returns its outcome once
    /// the fence held.
    async fn write(
        &self,
        statement: &'static str,
        collection: &str,
        key: &str,
        value: Option<Vec<u8>>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<WriteOutcome> {
        let verb = if value.is_some() {
            "writing"
        } else {
            "deleting"
        };
        let doing = format!("{verb} {collection}/{key}");
        let mut query = sqlx::query(statement)
            .bind(collection)
            .bind(key)
            .bind(fence.map(|f| f.lease.as_str()))
            .bind(fence.map_or(0, token_of));
        if let Some(value) = value {
            query = query.bind(value);
        }
        if let Precondition::At(version) = expect {
            query = query.bind(db_version(version));
        }
        let row = query
            .fetch_one(self.pool)
            .await
            .map_err(|e| map_sqlx(self.server, doing.clone(), e))?;
        let outcome = WriteOutcome::from_row(&row).map_err(|e| map_sqlx(self.server, doing, e))?;
        outcome.fenced(fence)?;
        Ok(outcome)
    }

    pub(crate) async fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<Version> {
        let statement = match expect {
            Precondition::At(_) => PUT_AT,
            Precondition::Absent => PUT_ABSENT,
            Precondition::Any => PUT_ANY,
        };
        let outcome = self
            .write(statement, collection, key, Some(value), expect, fence)
            .await?;
        match outcome.written {
            Some(version) => Ok(version_of(version)),
            None => Err(outcome.conflict(collection, key, expect)),
        }
    }

    pub(crate) async fn delete(
        &self,
        collection: &str,
        key: &str,
        expect: Precondition,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let statement = match expect {
            Precondition::At(_) => DELETE_AT,
            Precondition::Absent => DELETE_ABSENT,
            Precondition::Any => DELETE_ANY,
        };
        let outcome = self
            .write(statement, collection, key, None, expect, fence)
            .await?;
        match expect {
            Precondition::Any => Ok(()),
            Precondition::At(_) if outcome.written.is_some() => Ok(()),
            Precondition::Absent if outcome.found.is_none() => Ok(()),
            _ => Err(outcome.conflict(collection, key, expect)),
        }
    }
}
