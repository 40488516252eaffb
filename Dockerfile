# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 FLEET_DATA_DIR=/var/lib/fleet
WORKDIR /app
COPY pyproject.toml README.md ./
COPY console console
COPY fleet fleet
COPY access access
COPY audit audit
# python-ldap (directory sign-in) builds against OpenLDAP's and SASL's headers; libldap stays for run time.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libldap2-dev libsasl2-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libldap2-dev libsasl2-dev && apt-get autoremove -y && apt-get install -y --no-install-recommends libldap-2.5-0 libsasl2-2 \
    && rm -rf /var/lib/apt/lists/*
COPY manage.py ./
COPY templates templates
COPY static static
# a fixed, numeric id: Kubernetes' runAsNonRoot can only check a number (deploy/kubernetes)
RUN useradd --system --uid 10001 --home /var/lib/fleet fleet && mkdir -p /var/lib/fleet && chown fleet /var/lib/fleet
USER 10001
EXPOSE 8000
CMD ["uvicorn", "console.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--lifespan", "off", "--proxy-headers", "--ws-per-message-deflate", "false"]
