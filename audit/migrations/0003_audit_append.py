"""audit_append(): the chain's append in one call. It takes the chain's lock, reads the last
event, and inserts the new one with its seq, prev_hash and SHA-256 — computed from the canonical
JSON that Python cut into three parts around those two values. PL/pgSQL keeps its plans, so the
lock is held for one short round trip (see audit.chain.record)."""
from django.db import migrations

FIELDS = ("created_at timestamptz, actor_id bigint, actor_name text, actor_role text, actor_department text, "
          "action text, target_type text, target_id text, target_repr text, before jsonb, after jsonb, "
          "context jsonb, source_ip text, request_id text, channel text")
NAMES = [f.split()[0] for f in FIELDS.split(", ")]

APPEND = f"""
CREATE OR REPLACE FUNCTION audit_append(standalone boolean, a text, b text, c text,
                                        {", ".join("p_" + f for f in FIELDS.split(", "))},
                                        OUT o_id bigint, OUT o_seq bigint, OUT o_prev text, OUT o_hash text)
AS $$
DECLARE
    last_seq bigint;
BEGIN
    IF standalone THEN
        -- This statement is its own transaction: commit without waiting for the WAL flush, so the
        -- chain's lock is released at once; the caller then waits for the flush outside the lock
        -- (audit.chain.record), where concurrent writers share one.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    PERFORM pg_advisory_xact_lock(5074542366556255588);  -- "FleetAud", as audit.chain._LOCK_KEY
    SELECT seq, hash INTO last_seq, o_prev FROM audit_auditevent ORDER BY seq DESC LIMIT 1;
    IF last_seq IS NULL THEN
        last_seq := 0;
        o_prev := repeat('0', 64);
    END IF;
    o_seq := last_seq + 1;
    o_hash := encode(sha256(convert_to(o_prev || a || '"' || o_prev || '"' || b || o_seq::text || c, 'UTF8')), 'hex');
    INSERT INTO audit_auditevent ({", ".join(NAMES)}, seq, prev_hash, hash)
    VALUES ({", ".join("p_" + n for n in NAMES)}, o_seq, o_prev, o_hash)
    RETURNING id INTO o_id;
END;
$$ LANGUAGE plpgsql;
"""
DROP = f"DROP FUNCTION IF EXISTS audit_append(boolean, text, text, text, {', '.join(f.split()[1] for f in FIELDS.split(', '))});"


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_verify_runs_archives")]
    operations = [migrations.RunSQL(APPEND, DROP)]
