from django.db import migrations, models

# One aggregated upsert per period per INSERT statement (its transition table): a ledger batch of
# 500 rows costs two statements more, and whatever inserts rows (the ledger, a restore, a test)
# keeps the rollups exact. Deleting raw rows (retention) leaves them as they are, by design.
COLUMNS = (
    "period, start, user_id, department_id, model, requests, refused, prompt_tokens, completion_tokens, "
    "latency_ms_sum, ttft_ms_sum, ttft_count"
)
TOTALS = """
    SELECT '{period}', date_trunc('{period}', created_at, 'UTC'), COALESCE(user_id, 0), COALESCE(department_id, 0),
           model, count(*), count(*) FILTER (WHERE status <> 200), sum(prompt_tokens), sum(completion_tokens),
           sum(latency_ms), COALESCE(sum(ttft_ms), 0), count(ttft_ms)
    FROM {source} GROUP BY 2, 3, 4, 5
"""
ADD = """
    ON CONFLICT (period, start, user_id, department_id, model) DO UPDATE SET
        requests = access_usagerollup.requests + EXCLUDED.requests,
        refused = access_usagerollup.refused + EXCLUDED.refused,
        prompt_tokens = access_usagerollup.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = access_usagerollup.completion_tokens + EXCLUDED.completion_tokens,
        latency_ms_sum = access_usagerollup.latency_ms_sum + EXCLUDED.latency_ms_sum,
        ttft_ms_sum = access_usagerollup.ttft_ms_sum + EXCLUDED.ttft_ms_sum,
        ttft_count = access_usagerollup.ttft_count + EXCLUDED.ttft_count;
"""
UPSERT = f"""
CREATE FUNCTION usage_rollup_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO access_usagerollup ({COLUMNS}) {TOTALS.format(period="hour", source="new_rows")} {ADD}
    INSERT INTO access_usagerollup ({COLUMNS}) {TOTALS.format(period="day", source="new_rows")} {ADD}
    RETURN NULL;
END $$;
CREATE TRIGGER usage_rollup AFTER INSERT ON access_usagerecord
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_insert();
INSERT INTO access_usagerollup ({COLUMNS}) {TOTALS.format(period="hour", source="access_usagerecord")};
INSERT INTO access_usagerollup ({COLUMNS}) {TOTALS.format(period="day", source="access_usagerecord")};
"""
DROP = """
DROP TRIGGER IF EXISTS usage_rollup ON access_usagerecord;
DROP FUNCTION IF EXISTS usage_rollup_insert();
"""



class Migration(migrations.Migration):

    dependencies = [
        ('access', '0003_usage_one_row_per_call'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period', models.CharField(choices=[('hour', 'Hour'), ('day', 'Day')], max_length=4)),
                ('start', models.DateTimeField()),
                ('user_id', models.BigIntegerField(default=0)),
                ('department_id', models.BigIntegerField(default=0)),
                ('model', models.CharField(max_length=100)),
                ('requests', models.BigIntegerField(default=0)),
                ('refused', models.BigIntegerField(default=0)),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('latency_ms_sum', models.FloatField(default=0)),
                ('ttft_ms_sum', models.FloatField(default=0)),
                ('ttft_count', models.BigIntegerField(default=0)),
            ],
            options={
                'indexes': [models.Index(fields=['user_id', 'period', 'start'], name='rollup_user'), models.Index(fields=['department_id', 'period', 'start'], name='rollup_dept')],
                'constraints': [models.UniqueConstraint(fields=('period', 'start', 'user_id', 'department_id', 'model'), name='rollup_bucket')],
            },
        ),
        migrations.RunSQL(UPSERT, DROP),
    ]
