from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0006_checksum_claim'),
    ]

    operations = [
        migrations.AddField(
            model_name='deployment',
            name='routing',
            field=models.CharField(choices=[('least-busy', 'Least busy'), ('prefix', 'By prompt prefix (prefix cache affinity)')], default='least-busy', max_length=16),
        ),
    ]
