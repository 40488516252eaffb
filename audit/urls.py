"""Pages and API routes of the audit trail."""

from django.urls import path

from audit import api, views

urlpatterns = [
    path("audit/", views.trail, name="audit-trail"),
    path("audit/events/<int:seq>/", views.event_detail, name="audit-event"),
    path("audit/verify/", views.verify_now, name="audit-verify"),
    path("audit/export/<str:kind>/", views.export, name="audit-export"),
]

api_urlpatterns = [
    path("audit/events/", api.events, name="api-audit-events"),
    path("audit/verify/", api.verify_chain, name="api-audit-verify"),
]
