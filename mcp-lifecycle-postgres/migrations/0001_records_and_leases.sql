-- mcp-lifecycle-postgres, schema version 1: records, the store-wide revision, leases.
-- Runs in the store's own schema (the connection's search_path).

-- Every write takes the next value: versions are store-wide and only grow, so a
-- record deleted and created again never gets an old version back.
CREATE SEQUENCE mcp_revision AS bigint MINVALUE 1 NO CYCLE;

CREATE TABLE mcp_records (
    -- COLLATE "C": keys sort by their UTF-8 bytes, as the Store port lists them.
    collection text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    value      bytea  NOT NULL,
    PRIMARY KEY (collection, key)
);

-- One row per lease key, never deleted: `token` is the newest fencing token ever
-- granted (kept after a release or an expiry, so fencing keeps working). While
-- someone holds the lease, `holder` and `expires_at_ms` say who and until when
-- (milliseconds since the epoch, from the callers' clocks); both are NULL after
-- a release. The current holding's token is always `token`.
CREATE TABLE mcp_leases (
    key           text COLLATE "C" PRIMARY KEY,
    holder        text,
    token         bigint NOT NULL CHECK (token > 0),
    expires_at_ms bigint,
    CHECK ((holder IS NULL) = (expires_at_ms IS NULL))
);
