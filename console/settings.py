"""Django settings, read from the environment (see console/config.py and the README)."""

from __future__ import annotations

from datetime import timedelta

import dj_database_url
import ldap
from django_auth_ldap.config import LDAPSearch, NestedActiveDirectoryGroupType, NestedGroupOfNamesType

from console.config import (
    BASE_DIR,
    data_dir,
    env,
    env_bool,
    env_int,
    env_list,
    local_secret_key,
    mode,
    oidc_providers,
    require,
)
from fleet.protocol import tasks
from fleet.protocol.live import CHANNEL_PREFIX, channel_layer_hosts

MODE = mode()
LOCAL = MODE == "local"
DEBUG = env_bool("FLEET_DEBUG", False)
DATA_DIR = data_dir()

_LAUNCH_HINT = "Start the console with `make run` (it starts embedded servers) or set it explicitly."
SECRET_KEY = env("SECRET_KEY") or (local_secret_key() if LOCAL else require("SECRET_KEY"))
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if LOCAL else [])
if not ALLOWED_HOSTS:
    require("ALLOWED_HOSTS", "Give a comma-separated list of the host names the console is served on.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "console",
    "access",
    "audit",
    "fleet",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "console.middleware.RequestIdMiddleware",
    "console.middleware.RefuseMalformedInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "access.people.twofactor.TwoFactorMiddleware",  # nothing answers before the second factor is given
    "console.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context.navigation",
            ],
        },
    },
]

# --- data stores: real PostgreSQL and Redis, never SQLite -------------------------------------
DATABASES = {
    "default": dj_database_url.parse(require("DATABASE_URL", _LAUNCH_HINT), conn_max_age=60, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgresql://...)")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = require("REDIS_URL", _LAUNCH_HINT)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "fleet",
        "OPTIONS": {"serializer": "console.cache.JSONSerializer"},  # never pickle: agents share this Redis
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": channel_layer_hosts(REDIS_URL), "prefix": CHANNEL_PREFIX},
    }
}
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = "console"
CELERY_TASK_IGNORE_RESULT = True  # only tasks whose caller waits (agent registration) keep a result
CELERY_RESULT_EXPIRES = timedelta(hours=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task acknowledged late whose worker was killed outright goes back on the queue after this long
# (Redis's default is an hour); long enough for the slowest such task, a large model's checksum.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("FLEET_TASK_VISIBILITY_TIMEOUT_S", 900)}
CELERY_BEAT_SCHEDULE_FILE = str(DATA_DIR / "celerybeat-schedule")
# --- fleet: nodes, liveness, telemetry history, /metrics ----------------------------------------
FLEET_NODE_OFFLINE_AFTER_S = env_int("FLEET_NODE_OFFLINE_AFTER_S", 15)  # silence before Offline
FLEET_LIVENESS_CHECK_S = env_int("FLEET_LIVENESS_CHECK_S", 5)
FLEET_ROLLUP_RETENTION_DAYS = env_int("FLEET_ROLLUP_RETENTION_DAYS", 30)
FLEET_METRICS_TOKEN = env("FLEET_METRICS_TOKEN", "")  # Bearer token for Prometheus scrapers
FLEET_METRICS_PUBLIC = env_bool("FLEET_METRICS_PUBLIC", False)  # no auth (a trusted scrape network)
# Directories models may be registered from (comma-separated); the first is where new ones go.
# vLLM flags beyond the typed schema that deployments may set, e.g. "enforce-eager,swap-space".
FLEET_VLLM_EXTRA_OPTIONS = env_list("FLEET_VLLM_EXTRA_OPTIONS", [])
FLEET_REPLACE_AFTER_S = env_int("FLEET_REPLACE_AFTER_S", 60)  # an offline node's instances move after this
FLEET_RECONCILE_S = env_int("FLEET_RECONCILE_S", 10)
FLEET_DRAIN_S = env_int("FLEET_DRAIN_S", 30)  # an instance being stopped finishes its calls in flight, up to this
FLEET_AUTOSCALE_S = env_int("FLEET_AUTOSCALE_S", 5)  # how often the autoscaler reads the load (agents report every 5 s)
# A call for a deployment scaled to zero is held while it wakes: at most this many at once per
# gateway process and deployment, for at most this long (then a 503 with Retry-After).
FLEET_WAKE_HOLD_MAX = env_int("FLEET_WAKE_HOLD_MAX", 256)
FLEET_WAKE_TIMEOUT_S = env_int("FLEET_WAKE_TIMEOUT_S", 600)
FLEET_DEPLOY_PORTS = (env_int("FLEET_DEPLOY_PORT_MIN", 20000), env_int("FLEET_DEPLOY_PORT_MAX", 29999))
FLEET_MODEL_ROOTS = env_list("FLEET_MODEL_ROOTS", [str(DATA_DIR / "models")])
# --- the audit trail ---------------------------------------------------------------------------
FLEET_AUDIT_RETENTION_DAYS = env_int("FLEET_AUDIT_RETENTION_DAYS", 0)  # 0: keep every event in the table
FLEET_AUDIT_ARCHIVE_DIR = env("FLEET_AUDIT_ARCHIVE_DIR", str(DATA_DIR / "audit-archive"))
# --- the gateway at /v1 -------------------------------------------------------------------------
FLEET_GATEWAY_READ_TIMEOUT_S = env_int("FLEET_GATEWAY_READ_TIMEOUT_S", 600)  # silence from vLLM before 502
FLEET_LEDGER_DRAIN_S = env_int("FLEET_LEDGER_DRAIN_S", 3)  # beat's ledger drain, besides the gateway's asks
FLEET_USAGE_RETENTION_DAYS = env_int("FLEET_USAGE_RETENTION_DAYS", 0)  # 0: keep every ledger row; rollups stay
FLEET_LEDGER_BACKLOG_ALARM = env_int("FLEET_LEDGER_BACKLOG_ALARM", 100_000)  # calls queued, not yet written

CELERY_BEAT_SCHEDULE = {
    "audit-verify": {"task": "audit.tasks.verify_chain_task", "schedule": timedelta(hours=1)},
    "audit-verify-full": {
        "task": "audit.tasks.verify_chain_task",
        "schedule": timedelta(days=1),
        "kwargs": {"full": True},
    },
    "audit-archive": {"task": "audit.tasks.archive_task", "schedule": timedelta(days=1)},
    "fleet-liveness": {"task": tasks.CHECK_LIVENESS, "schedule": timedelta(seconds=FLEET_LIVENESS_CHECK_S)},
    "fleet-prune-rollups": {"task": tasks.PRUNE_ROLLUPS, "schedule": timedelta(hours=1)},
    "fleet-reconcile": {"task": tasks.RECONCILE, "schedule": timedelta(seconds=FLEET_RECONCILE_S)},
    "fleet-autoscale": {
        "task": tasks.AUTOSCALE,
        "schedule": timedelta(seconds=FLEET_AUTOSCALE_S),
        "options": {"expires": FLEET_AUTOSCALE_S},
    },
    "access-expire-grants": {"task": "access.expire_grants", "schedule": timedelta(minutes=1)},
    # The gateway asks for a drain when rows arrive; this catches what a failed drain left.
    "access-prune-usage": {"task": "access.prune_usage", "schedule": timedelta(hours=6)},
    "access-check-ledger": {"task": "access.check_ledger", "schedule": timedelta(seconds=30)},
    "access-write-usage": {
        "task": "access.write_usage",
        "schedule": timedelta(seconds=FLEET_LEDGER_DRAIN_S),
        "options": {"expires": FLEET_LEDGER_DRAIN_S},
    },
}

# --- people -----------------------------------------------------------------------------------
AUTH_USER_MODEL = "access.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # must come first: it refuses locked-out logins
    # Local accounts before the directory: a break-glass admin signs in without waiting on a
    # directory that is down (directory accounts have no usable local password).
    "django.contrib.auth.backends.ModelBackend",
    "access.people.directory.DirectoryBackend",  # answers nothing while FLEET_LDAP_URI is unset
    "access.people.oidc.OIDCBackend",  # keeps OIDC sessions; the sign-in itself is the callback's
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if LOCAL and env_bool("FLEET_FAST_PASSWORD_HASHER", False):
    # Test runs only (console.launch sets it): keeps persona set-up fast; never in production mode.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

AXES_FAILURE_LIMIT = env_int("FLEET_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("FLEET_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "access.people.views.lockout"
AXES_VERBOSE = False

# --- directory sign-in: LDAP or Active Directory (django-auth-ldap; README "Signing in with the directory")
AUTH_LDAP_SERVER_URI = env("FLEET_LDAP_URI", "")  # ldap://dc1.example.org or ldaps://…; empty: local accounts only
AUTH_LDAP_START_TLS = env_bool("FLEET_LDAP_START_TLS", False)
AUTH_LDAP_BIND_DN = env("FLEET_LDAP_BIND_DN", "")  # the read-only account that searches people and groups
AUTH_LDAP_BIND_PASSWORD = env("FLEET_LDAP_BIND_PASSWORD", "")
FLEET_LDAP_KIND = env("FLEET_LDAP_KIND", "openldap")  # or active_directory: its attributes, nesting and flags
_AD = FLEET_LDAP_KIND == "active_directory"
AUTH_LDAP_USER_SEARCH = LDAPSearch(
    env("FLEET_LDAP_USER_BASE", ""),
    ldap.SCOPE_SUBTREE,
    env("FLEET_LDAP_USER_FILTER", "(sAMAccountName=%(user)s)" if _AD else "(uid=%(user)s)"),
)
AUTH_LDAP_GROUP_SEARCH = LDAPSearch(
    env("FLEET_LDAP_GROUP_BASE", ""), ldap.SCOPE_SUBTREE, "(objectClass=group)" if _AD else "(objectClass=groupOfNames)"
)
# Nested membership as the directory does it: a member of a group inside a mapped group is a member.
AUTH_LDAP_GROUP_TYPE = NestedActiveDirectoryGroupType() if _AD else NestedGroupOfNamesType()
AUTH_LDAP_USER_ATTR_MAP = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
AUTH_LDAP_CACHE_TIMEOUT = 0  # memberships are read afresh at every sign-in: a change counts at once
# A disabled account: AD's ACCOUNTDISABLE flag, or OpenLDAP's password-policy lock.
FLEET_LDAP_DISABLED_FILTER = env(
    "FLEET_LDAP_DISABLED_FILTER",
    "(userAccountControl:1.2.840.113556.1.4.803:=2)" if _AD else "(pwdAccountLockedTime=*)",
)
FLEET_LDAP_SYNC_MINUTES = env_int("FLEET_LDAP_SYNC_MINUTES", 15)
AUTH_LDAP_CONNECTION_OPTIONS = {
    ldap.OPT_NETWORK_TIMEOUT: 5,
    ldap.OPT_TIMEOUT: 10,
    ldap.OPT_REFERRALS: 0,  # AD's referrals would send the bind account's password to other servers
    ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
    **({ldap.OPT_X_TLS_CACERTFILE: env("FLEET_LDAP_CA_FILE", "")} if env("FLEET_LDAP_CA_FILE") else {}),
    ldap.OPT_X_TLS_NEWCTX: 0,  # last: applies the TLS options above to this connection
}
if AUTH_LDAP_SERVER_URI and FLEET_LDAP_SYNC_MINUTES > 0:
    CELERY_BEAT_SCHEDULE["access-sync-directory"] = {
        "task": "access.sync_directory",
        "schedule": timedelta(minutes=FLEET_LDAP_SYNC_MINUTES),
    }

# --- single sign-on: OpenID Connect providers (Authlib; README "Signing in with single sign-on") --------
FLEET_OIDC_PROVIDERS = oidc_providers()
FLEET_OIDC_LEEWAY_S = env_int("FLEET_OIDC_LEEWAY_S", 60)  # clock skew allowed on an ID token's exp, iat

FLEET_REQUIRE_ADMIN_2FA = env_bool("FLEET_REQUIRE_ADMIN_2FA", False)  # local admins must enrol an authenticator
OTP_TOTP_ISSUER = env("FLEET_TOTP_ISSUER", "Fleet Console")

# --- e-mail (set-password links); unset FLEET_SMTP_HOST: links are shown to the admin instead ----------
EMAIL_HOST = env("FLEET_SMTP_HOST", "")
EMAIL_PORT = env_int("FLEET_SMTP_PORT", 587)
EMAIL_HOST_USER = env("FLEET_SMTP_USER", "")
EMAIL_HOST_PASSWORD = env("FLEET_SMTP_PASSWORD", "")
EMAIL_USE_TLS = env_bool("FLEET_SMTP_STARTTLS", True)
DEFAULT_FROM_EMAIL = env("FLEET_SMTP_FROM", "fleet-console@localhost")
PASSWORD_RESET_TIMEOUT = env_int("FLEET_PASSWORD_LINK_HOURS", 72) * 3600

# --- HTTP security ------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("FLEET_SESSION_SECONDS", 8 * 3600)
CSRF_COOKIE_HTTPONLY = False  # the websocket/htmx helpers read it to send X-CSRFToken
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not LOCAL:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes inside the network speak plain HTTP
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("FLEET_BEHIND_TLS_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- API ------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # token first, so an unauthenticated call gets 401 with WWW-Authenticate: Bearer
        "access.people.authentication.PersonalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "console.serializers.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "console.api.exception_handler",
    # JSON bodies only (the jobs API adds multipart for its one file upload): one body shape to check
    "DEFAULT_PARSER_CLASSES": ["console.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fleet Console API",
    "DESCRIPTION": "Manage an on-premises LLM fleet: people, nodes, models, deployments, audit.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated", "access.people.permissions.AnyRole"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "kind" and a "state": a node's, a model file's, a job's, ...
    "ENUM_NAME_OVERRIDES": {
        "NodeKindEnum": "fleet.nodes.choices.NodeKind",
        "ModelFileKindEnum": "fleet.catalog.models.ModelFile.Kind",
        "NodeStateEnum": "fleet.nodes.choices.NodeState",
        "InstanceStateEnum": "fleet.deployments.choices.InstanceState",
        "JobKindEnum": "fleet.jobs.choices.JobKind",
        "JobStateEnum": "fleet.jobs.choices.JobState",
    },
    # every operation declares the error statuses the exception handler can answer, with its body
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "console.api.declare_errors",
        "console.api.close_requests",
    ],
}

# --- i18n, static -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"  # filled by `collectstatic` for production serving
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from static/ too, so collectstatic is optional

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "console.middleware.RequestIdLogFilter"},
        "refusal": {"()": "console.middleware.RefusalLogFilter"},
    },
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "axes": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["refusal"]},
    },
}
