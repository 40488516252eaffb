"""Pages and API routes of the usage ledger."""

from django.urls import path

from access.usage import api, views

urlpatterns = [
    path("usage/", views.usage_page, name="usage"),
    path("usage.csv", views.usage_csv, name="usage-csv"),
]

api_urlpatterns = [
    path("usage/", api.usage_rows, name="api-usage"),
    path("usage/summary/", api.usage_summary, name="api-usage-summary"),
]
