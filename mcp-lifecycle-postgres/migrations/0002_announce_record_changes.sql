-- mcp-lifecycle-postgres, schema version 2: every committed change to a record is
-- announced with NOTIFY, so hosts sharing the store act on each other's writes at once
-- (PostgresStore's `changes()`, LISTENing on channel `mcp_lifecycle_changes`).
--
-- Payload: schema TAB collection TAB version TAB key (version empty for a delete; the
-- key last, so it may hold anything). Several stores can share a database under other
-- schemas; listeners keep their own schema's payloads. A payload too long for NOTIFY
-- (8000 bytes) is sent with the collection, version and key left empty, which
-- listeners take as "changes may have been missed".
-- NOTIFY is delivered when the writing transaction commits, and not at all if it
-- rolls back; a write that changes no row (a failed compare-and-swap, a fenced or
-- conflicting write, a delete of a missing record) fires no row trigger.

CREATE FUNCTION mcp_announce_record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        payload := TG_TABLE_SCHEMA || E'\t' || OLD.collection || E'\t' || E'\t' || OLD.key;
    ELSE
        payload := TG_TABLE_SCHEMA || E'\t' || NEW.collection || E'\t' || NEW.version::text
            || E'\t' || NEW.key;
    END IF;
    IF octet_length(payload) > 7900 THEN
        payload := TG_TABLE_SCHEMA || E'\t\t\t';
    END IF;
    PERFORM pg_notify('mcp_lifecycle_changes', payload);
    RETURN NULL;
END
$$;

CREATE TRIGGER mcp_records_announce
    AFTER INSERT OR UPDATE OR DELETE ON mcp_records
    FOR EACH ROW EXECUTE FUNCTION mcp_announce_record_change();
