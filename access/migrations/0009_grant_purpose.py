from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0008_key_purpose'),
    ]

    operations = [
        migrations.AddField(
            model_name='grant',
            name='purpose',
            field=models.CharField(choices=[('access', 'Access'), ('playground', "Administrator's playground")], default='access', max_length=16),
        ),
    ]
