from django.db import migrations, models

# Rows that already share a request id (none should: ids are random) keep every row, told apart by
# a suffix, so the constraint can be added without deleting anything from the ledger.
MARK_REPEATS = """
UPDATE access_usagerecord AS u SET request_id = left(u.request_id, 28) || '#' || d.n
FROM (
    SELECT id, row_number() OVER (PARTITION BY request_id ORDER BY id) AS n
    FROM access_usagerecord WHERE request_id <> ''
) AS d
WHERE u.id = d.id AND d.n > 1
"""


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0002_grants_keys_usage"),
        ("fleet", "0005_jobs"),
    ]

    operations = [
        migrations.RunSQL(MARK_REPEATS, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="usagerecord",
            constraint=models.UniqueConstraint(
                condition=models.Q(("request_id", ""), _negated=True),
                fields=("request_id",),
                name="usage_one_row_per_call",
            ),
        ),
    ]
